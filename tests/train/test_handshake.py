"""The launchers' handshake on MASTER_PORT, with real torch TCPStores on loopback: one thread per "node"."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import threading
import time
from typing import Any

import pytest

from arpo_train_sft.demo.model import DEMO_MODEL_DIR, ensure_demo_model
from arpo_train_sft.errors import EXIT_USER_ERROR, UserError
from arpo_train_sft.train.handshake import agree, data_info, mismatch, node_info
from arpo_train_sft.train.tokenized import MANIFEST
from arpo_train_sft.train.tokenized.key import DATA_FILE, TOKENIZER
from arpo_train_sft.train.topology import Topology, free_port

from .test_multinode import finish, launch, output

VALUES = {"model_name_or_path": "m", "learning_rate": 1e-5}
# What a node tokenized (data_info): node 1 below has another copy of data/sft.json at the same path.
INPUTS = {"dataset": "sft", f"{DATA_FILE}data/sft.json": "aaaa", TOKENIZER: "tttt", "tiktoken": "0.9.0"}
DATA = {"key": "k1", "path": "/cache/k1/dataset", "rows": {"train": 54574}, "inputs": INPUTS}
OTHER_COPY = {
    "key": "k2",
    "path": "/cache/k2/dataset",
    "rows": {"train": 54000},
    "inputs": {**INPUTS, f"{DATA_FILE}data/sft.json": "bbbb"},
}


def nodes(nnodes: int, port: int, timeout: int = 20) -> list[Topology]:
    return [Topology(1, nnodes, rank, "127.0.0.1", port, rdzv_timeout=timeout) for rank in range(nnodes)]


def run_nodes(
    plans: list[tuple[Topology, dict[str, Any]]], decide=lambda: ("resume_from_checkpoint=out/c-8",)
):
    """Run agree() for every (topology, info) at once; each node's result or the UserError it raised."""
    results: dict[int, Any] = {}

    def one(index: int, topo: Topology, info: dict[str, Any]) -> None:
        try:
            results[index] = agree(topo, info, decide)
        except UserError as err:
            results[index] = err

    threads = [threading.Thread(target=one, args=(i, *plan)) for i, plan in enumerate(plans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return [results[i] for i in range(len(plans))]


def test_every_node_gets_node_0s_decision_which_node_0_alone_makes():
    calls = []

    def decide():
        calls.append(threading.current_thread().name)
        return ("resume_from_checkpoint=out/checkpoint-8",)

    topos = nodes(3, free_port())
    results = run_nodes([(t, node_info(t, VALUES, False, DATA)) for t in topos], decide)
    assert results == [("resume_from_checkpoint=out/checkpoint-8",)] * 3
    assert len(calls) == 1


def test_a_single_node_decides_alone_without_a_store():
    assert agree(Topology(2), {}, lambda: ("x=1",)) == ("x=1",)


def test_mismatched_nnodes_stops_both_nodes_naming_nnodes():
    port = free_port()
    node0 = nodes(2, port)[0]
    node1 = dataclasses.replace(nodes(3, port)[1])
    started = time.monotonic()
    results = run_nodes(
        [(node0, node_info(node0, VALUES, False, DATA)), (node1, node_info(node1, VALUES, False, DATA))]
    )
    assert time.monotonic() - started < 15  # named as soon as node 1 arrives, not at RDZV_TIMEOUT
    for result in results:
        assert isinstance(result, UserError)
        assert "NNODES differs between nodes: node 0" in str(result) and "NNODES=2" in str(result)
        assert "NNODES=3: set the same NNODES on every node" in str(result)


def test_two_nodes_with_one_node_rank_are_named():
    port = free_port()
    topos = nodes(3, port)
    twice = [topos[0], topos[1], topos[1]]
    results = run_nodes([(t, node_info(t, VALUES, False, DATA)) for t in twice])
    assert all(isinstance(r, UserError) and "NODE_RANK=1 is set on two nodes" in str(r) for r in results)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda info: info["config"].update(learning_rate="other"),
            "the config differs between node 0 and node 1",
        ),
        (lambda info: info.update(fresh=True), "--fresh is given on node 1 ("),
        (lambda info: info.update(nproc_per_node=4), "NPROC_PER_NODE differs between nodes"),
        (lambda info: info["versions"].update(torch="0.0"), "package versions differ"),
        (
            lambda info: info.update(data=OTHER_COPY),
            "node 1 (" + socket.gethostname() + ") tokenized data/sft.json",
        ),
    ],
)
def test_a_node_that_differs_from_node_0_is_named(change, message: str):
    topos = nodes(2, free_port())
    infos = [node_info(t, VALUES, False, DATA) for t in topos]
    change(infos[1])
    results = run_nodes(list(zip(topos, infos, strict=True)))
    assert all(isinstance(r, UserError) and message in str(r) for r in results), results
    if "config" in message:
        assert "in learning_rate:" in str(results[0])


def test_node_0_refusing_the_resume_stops_every_node_with_its_reason():
    def refuse():
        raise UserError("out: holds an earlier run; relaunch with --fresh")

    topos = nodes(2, free_port())
    results = run_nodes([(t, node_info(t, VALUES, False, DATA)) for t in topos], refuse)
    assert str(results[0]) == "out: holds an earlier run; relaunch with --fresh"
    assert str(results[1]) == "node 0 stopped the job: out: holds an earlier run; relaunch with --fresh"


def test_an_unreachable_master_is_named_within_rdzv_timeout():
    node1 = nodes(2, free_port(), timeout=2)[1]
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        agree(node1, node_info(node1, VALUES, False, DATA), lambda: ())
    assert time.monotonic() - started < 10
    assert str(err.value).startswith(
        f"NODE_RANK=1: could not reach node 0 at MASTER_ADDR=127.0.0.1 MASTER_PORT={node1.master_port} within RDZV_TIMEOUT=2 s"
    )


def test_a_master_name_that_does_not_resolve_fails_at_once():
    node1 = dataclasses.replace(nodes(2, free_port())[1], master_addr="no-such-host.invalid")
    with pytest.raises(
        UserError, match="MASTER_ADDR=no-such-host.invalid: this node cannot resolve that name"
    ):
        agree(node1, node_info(node1, VALUES, False, DATA), lambda: ())


def test_node_0_waiting_for_a_node_that_never_comes_names_it():
    node0 = nodes(3, free_port(), timeout=2)[0]
    with pytest.raises(
        UserError,
        match=r"NNODES=3: node 0 heard from 1 of 3 nodes within RDZV_TIMEOUT=2 s \(no NODE_RANK 1, 2\)",
    ):
        agree(node0, node_info(node0, VALUES, False, DATA), lambda: ())


def test_a_taken_master_port_is_named():
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        node0 = nodes(2, sock.getsockname()[1])[0]
        with pytest.raises(
            UserError,
            match=rf"MASTER_PORT={node0.master_port}: node 0 cannot listen there \(it is already in use\)",
        ):
            agree(node0, node_info(node0, VALUES, False, DATA), lambda: ())


def two_nodes(data0: dict[str, Any], data1: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Node 0's and node 1's infos, on hosts hostA and hostB, with these tokenized data."""
    node0, node1 = nodes(2, 1)
    mine = node_info(node0, VALUES, False, data0) | {"host": "hostA"}
    return mine, node_info(node1, VALUES, False, data1) | {"host": "hostB"}


def test_a_node_that_tokenized_another_copy_of_a_data_file_is_named_with_the_file_and_the_fix():
    mine, other = two_nodes(DATA, OTHER_COPY)
    assert mismatch(mine, other, {0: mine}) == (
        "node 1 (hostB) tokenized data/sft.json into /cache/k2/dataset (54,000 rows), node 0 (hostA) into "
        "/cache/k1/dataset (54,574 rows): give every node the same data file, e.g. on shared storage"
    )


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        (
            {**INPUTS, TOKENIZER: "uuuu"},
            "; the tokenizer files differ: give every node the same model_name_or_path",
        ),
        (
            {**INPUTS, "tiktoken": "0.8.0"},
            "; tiktoken 0.9.0 -> 0.8.0 (node 0 -> node 1): install the same packages and arpo-train-sft on",
        ),
    ],
)
def test_a_node_that_tokenized_the_same_file_otherwise_is_told_what_differs(inputs, says: str):
    mine, other = two_nodes(DATA, {**DATA, "key": "k2", "path": "/cache/k2/dataset", "inputs": inputs})
    line = mismatch(mine, other, {0: mine})
    assert line.startswith("node 1 (hostB) tokenized its data into /cache/k2/dataset (54,574 rows), node 0 ")
    assert says in line


def test_a_users_tokenized_path_with_other_rows_on_one_node_is_named():
    ours = {"key": "/shared/tok", "path": "/shared/tok", "rows": {"train": 9, "validation": 1}, "inputs": {}}
    mine, other = two_nodes(ours, {**ours, "rows": {"train": 8, "validation": 1}})
    assert mismatch(mine, other, {0: mine}) == (
        "node 1 (hostB) tokenized its data into /shared/tok (9 rows), node 0 (hostA) into /shared/tok "
        "(10 rows): give every node the same tokenized data, e.g. on shared storage"
    )
    assert mismatch(mine, mine | {"node_rank": 1}, {0: mine}) == ""


def test_data_info_reads_rows_from_the_cache_manifest_or_the_saved_dataset(tmp_path):
    entry = tmp_path / "k1"
    entry.mkdir()
    (entry / MANIFEST).write_text(json.dumps({"key": "k1", "rows": {"train": 3}, "inputs": INPUTS}))
    data = data_info({}, (f"tokenized_path={entry / 'dataset'}",))
    assert data == {"key": "k1", "path": str(entry / "dataset"), "rows": {"train": 3}, "inputs": INPUTS}

    import datasets

    saved = tmp_path / "mine"
    train = datasets.Dataset.from_dict({"input_ids": [[1, 2]] * 7}).filter(lambda row: True)
    datasets.DatasetDict({"train": train, "validation": train.select([0, 1])}).save_to_disk(str(saved))
    data = data_info({"tokenized_path": str(saved)}, ())
    assert data == {
        "key": str(saved),
        "path": str(saved),
        "rows": {"train": 7, "validation": 2},
        "inputs": {},
    }
    assert data_info({"tokenized_path": str(tmp_path / "nothing")}, ())["rows"] == {}


@pytest.mark.integration
def test_two_launchers_with_different_copies_of_a_data_file_both_stop_before_torchrun(checkout, tmp_path):
    other = tmp_path / "node1"  # node 1's disk: the same relative paths, its data file one row short
    shutil.copytree(checkout, other, ignore=shutil.ignore_patterns(".tokenized", "models", "checkpoints"))
    ensure_demo_model(checkout / DEMO_MODEL_DIR)  # shared with the suite's other demo runs
    (other / "models").symlink_to(checkout / "models")
    data = other / "dataset_info" / "demo" / "arpo_sft_demo.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))
    port = free_port()
    started = time.monotonic()
    pair = [launch(checkout, tmp_path / "out", 0, port, 2), launch(other, tmp_path / "out", 1, port, 2)]
    assert finish(pair, limit=300) == [EXIT_USER_ERROR, EXIT_USER_ERROR]
    print(f"both stopped in {time.monotonic() - started:.0f} s")
    for proc in pair:
        out = output(proc)
        assert (
            "tokenized dataset_info/demo/arpo_sft_demo.jsonl into " in out and "(299 rows), node 0 (" in out
        )
        assert "(300 rows): give every node the same data file, e.g. on shared storage" in out
        assert "[arpo-sft] log: " not in out  # torchrun never started
