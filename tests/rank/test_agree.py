"""Every rank takes global rank 0's resume argument, over a real torch TCPStore (torchrun's, in a job)."""

from __future__ import annotations

import datetime
import threading

from torch.distributed import TCPStore

from arpo_train_sft.rank.agree import agree_on_resume
from arpo_train_sft.train.topology import free_port


def test_every_rank_uses_rank_0s_resume_argument(capsys):
    port = free_port()
    _server = TCPStore(
        "127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(seconds=10)
    )
    env = {
        "WORLD_SIZE": "3",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RUN_ID": "r",
    }
    argvs = {
        0: ["entry", "cfg.yaml", "lr=1", "resume_from_checkpoint=out/checkpoint-8"],
        1: ["entry", "cfg.yaml", "lr=1", "resume_from_checkpoint=out/checkpoint-4"],  # raced another decision
        2: ["entry", "cfg.yaml", "lr=1"],  # its node found nothing to resume
    }
    results: dict[int, list[str]] = {}
    threads = [
        threading.Thread(
            target=lambda r=r: results.__setitem__(r, agree_on_resume(argvs[r], {**env, "RANK": str(r)}))
        )
        for r in (2, 1, 0)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {rank: argvs[0] for rank in (0, 1, 2)}
    out = capsys.readouterr().out
    assert "rank 1: this node's launcher chose ['resume_from_checkpoint=out/checkpoint-4']" in out
    assert "rank 2: this node's launcher chose no resume" in out


def test_a_single_process_keeps_its_arguments():
    argv = ["entry", "cfg.yaml", "resume_from_checkpoint=x"]
    assert agree_on_resume(argv, {"WORLD_SIZE": "1"}) == argv
