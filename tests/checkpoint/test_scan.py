"""The one checkpoint scan, on every layout DeepSpeed and the Trainer really write, whole and half-written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint.scan import list_checkpoints, scan, whole

from .conftest import MODEL, SHARD, ZERO_LAYOUTS


@pytest.mark.parametrize("layout", [*ZERO_LAYOUTS, "hf"])
def test_every_layout_as_saved_is_complete(make, layout: str):
    found = scan(make(layout))
    assert found.describe() == []
    assert found.step == 4 and found.world == 2
    assert found.stage == (ZERO_LAYOUTS[layout][0] if layout != "hf" else None)
    assert (found.tag_dir is None) == (layout == "hf")


def test_one_rank_without_deepspeed_needs_rng_state_pth(make):
    assert scan(make("hf", world=1)).describe() == []


@pytest.mark.parametrize("layout", ["zero2", "zero2-bf16", "zero3", "zero3-bf16"])
def test_a_missing_optim_shard_is_named_with_its_prefix(make, layout: str):
    path = make(layout, world=4)
    prefix = ZERO_LAYOUTS[layout][2]
    shard = path / "global_step4" / SHARD.format(prefix=prefix, rank=2, kind="optim")
    shard.unlink()
    assert scan(path).describe() == [f"global_step4/{shard.name}: missing (4 ranks saved this checkpoint)"]


@pytest.mark.parametrize("layout", ["zero0", "zero2"])
def test_the_single_model_file_is_required(make, layout: str):
    path = make(layout)
    (path / "global_step4" / MODEL).unlink()
    assert scan(path).describe() == [f"global_step4/{MODEL}: missing (2 ranks saved this checkpoint)"]


def test_empty_and_truncated_shards_are_named(make):
    path = make("zero3")
    empty = path / "global_step4" / SHARD.format(prefix="", rank=1, kind="model")
    empty.write_bytes(b"")
    cut = path / "global_step4" / SHARD.format(prefix="", rank=0, kind="optim")
    cut.write_bytes(cut.read_bytes()[:-40])
    assert scan(path).describe() == [
        f"global_step4/{empty.name}: not a readable PyTorch file (empty)",
        f"global_step4/{cut.name}: not a readable PyTorch file (truncated or overwritten: no zip directory at its end)",
    ]


def test_a_truncated_safetensors_file_is_found_from_its_header(make, tmp_path: Path):
    path = make("hf")
    weights = path / "model.safetensors"
    full = weights.read_bytes()
    weights.write_bytes(full[:-1])
    assert scan(path).describe() == [
        f"model.safetensors: not a readable safetensors file (truncated: {len(full) - 1} bytes, its header promises {len(full)})"
    ]
    weights.write_bytes(full[:12])
    assert "cut inside its header" in scan(path).describe()[0]
    weights.write_bytes((2).to_bytes(8, "little") + b"[]")
    assert scan(path).describe() == [
        "model.safetensors: not a readable safetensors file (its header is not a safetensors header)"
    ]
    assert scan(path).weight_problems  # an export stops here, too


def test_latest_naming_nothing(make):
    path = make("zero2")
    (path / "latest").write_text("global_step9\n")
    assert scan(path).describe() == ["latest: names global_step9/, which does not exist"]
    (path / "latest").write_text("")
    assert scan(path).describe() == ["latest: names nothing, which does not exist"]
    (path / "latest").unlink()
    (problem,) = scan(path).weight_problems
    assert problem.reason == "missing, though global_step4/ is there"
    assert problem.fix == f"write it: echo global_step4 > {path / 'latest'}"


def test_torn_or_missing_trainer_state(make):
    path = make("zero3")
    state = path / "trainer_state.json"
    state.write_text('{"global_step": 4, "log_hi')
    assert scan(path).describe() == ["trainer_state.json: not valid JSON (torn write)"]
    state.write_text("")
    assert scan(path).describe() == ["trainer_state.json: empty"]
    state.unlink()
    found = scan(path)
    assert found.describe() == [
        "trainer_state.json: missing (the Trainer writes it last: the save was interrupted)"
    ]
    assert found.weight_problems == ()  # the weights alone can still be exported
    state.write_text(json.dumps({"global_step": 3}))
    assert scan(path).describe() == ["trainer_state.json: says global_step 3, the directory name 4"]


def test_trainer_files_a_resume_reads(make):
    path = make("zero2")
    (path / "scheduler.pt").unlink()  # the Trainer loads it under DeepSpeed without looking first
    (path / "rng_state_1.pth").write_bytes(b"")
    assert scan(path).describe() == [
        "scheduler.pt: missing",
        "rng_state_1.pth: not a readable PyTorch file (empty)",
    ]
    hf = make("hf", step=8)
    (hf / "optimizer.pt").unlink()  # without it the Trainer would silently start a fresh optimizer
    assert scan(hf).describe() == ["optimizer.pt: missing"]


def test_a_rank_known_from_elsewhere_is_required(make):
    path = make("zero3")
    assert [p.file.name for p in scan(path, world=3).weight_problems] == [
        SHARD.format(prefix="", rank=2, kind=kind) for kind in ("model", "optim")
    ]
    # a ZeRO-2 checkpoint that lost every optim shard looks like ZeRO-0; the stage recorded inside tells
    path = make("zero2", step=5)
    for shard in (path / "global_step5").glob("*optim_states.pt"):
        shard.unlink()
    assert scan(path).describe() == []
    assert [p.file.name for p in scan(path, stage=2).problems] == [
        SHARD.format(prefix="", rank=r, kind="optim") for r in (0, 1)
    ]


def test_sharded_safetensors_and_a_finished_output_dir(make, tmp_path: Path, safetensors_bytes: bytes):
    run = tmp_path / "run"
    run.mkdir()
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (run / "model.safetensors.index.json").write_text(json.dumps(index))
    (run / "model-00001-of-00002.safetensors").write_bytes(safetensors_bytes)
    found = scan(run)  # not a checkpoint-N: only the weights matter
    assert [(p.file.name, p.reason) for p in found.problems] == [
        ("model-00002-of-00002.safetensors", "missing (named by the index)")
    ]
    (run / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes)
    assert scan(run).problems == ()
    (tmp_path / "notes").mkdir()
    (problem,) = scan(tmp_path / "notes").problems
    assert problem.reason.startswith("not a checkpoint (no DeepSpeed `latest` file")


def test_whole_reads_no_tensor(tmp_path: Path, torch_bytes: bytes):
    file = tmp_path / "x.pt"
    file.write_bytes(torch_bytes)
    assert whole(file) == ""
    assert whole(tmp_path / "absent.pt") == "missing"
    (tmp_path / "zip.pt").write_bytes(_zip_without_pickle())
    assert whole(tmp_path / "zip.pt") == "not a readable PyTorch file (a zip without data.pkl)"


def _zip_without_pickle() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/other", b"x")
    return buffer.getvalue()


def test_list_checkpoints_numeric_order_ignores_set_aside(tmp_path: Path):
    for name in ("checkpoint-100", "checkpoint-9", "checkpoint-9.incomplete-20260101-000000", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-5").write_text("a file, not a checkpoint")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-100"]
    assert list_checkpoints(tmp_path / "absent") == []


def test_export_reports_the_same_scan_in_its_own_words(make, tmp_path: Path):
    from arpo_train_sft.checkpoint import export
    from arpo_train_sft.errors import UserError

    path = make("zero2-bf16")
    shard = path / "global_step4" / SHARD.format(prefix="bf16_", rank=1, kind="optim")
    shard.unlink()
    with pytest.raises(UserError) as err:
        export.inspect_source(path)
    assert err.value.problems == [f"{shard}: missing (2 ranks saved this checkpoint); {export.FIX}"]
    (tmp_path / "notes").mkdir()
    with pytest.raises(UserError) as err:
        export.inspect_source(tmp_path / "notes")
    assert err.value.problems == [
        f"{tmp_path / 'notes'}: not a checkpoint (no DeepSpeed `latest` file, no global_step*/, no "
        "model.safetensors); pass a checkpoint-N/ dir or a finished run's output_dir"
    ]
