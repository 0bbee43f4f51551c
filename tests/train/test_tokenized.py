"""The tokenized-dataset cache: its key, its reasons, its checks, and the real build through LLaMA-Factory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arpo_train_sft.config import RunConfig, load_run_config
from arpo_train_sft.lf import fastbpe
from arpo_train_sft.train.tokenized import DATASET, MANIFEST, check_entry, tokenized_overrides, write_manifest
from arpo_train_sft.train.tokenized import build as tokenized_build
from arpo_train_sft.train.tokenized import key as tokenized_key
from arpo_train_sft.train.tokenized.entry import install
from arpo_train_sft.train.tokenized.key import build_args, cache_key, change_reason, key_inputs

from ..conftest import DEMO_OVERRIDES, run_env, tiny_data_and_tokenizer

NAMES = {
    "model_name_or_path",
    "dataset_dir",
    "dataset",
    "template",
    "cutoff_len",
    "mask_history",
    "train_on_prompt",
    "packing",
    "neat_packing",
    "max_samples",
    "preprocessing_num_workers",
    "hf_hub_token",
    "ms_hub_token",
}


@pytest.fixture
def run(tmp_path: Path) -> RunConfig:
    """A config over a tiny data file and a folder of tokenizer files (nothing is tokenized here)."""
    data, model = tiny_data_and_tokenizer(tmp_path)
    (model / "tokenizer_config.json").write_text("{}")
    values = {
        "model_name_or_path": str(model),
        "dataset_dir": str(data),
        "dataset": "rows",
        "template": "qwen",
        "cutoff_len": 15000,
        "preprocessing_num_workers": 4,
        "learning_rate": 1e-5,
        "output_dir": str(tmp_path / "out"),
    }
    return RunConfig(path=tmp_path / "x.yaml", overrides=(), values=values)


def inputs_of(cfg: RunConfig, **changes: object) -> dict:
    values = {**cfg.values, **changes}
    changed = RunConfig(path=cfg.path, overrides=(), values=values)
    return key_inputs(changed, build_args(changed, NAMES))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cutoff_len": 512}, "cutoff_len 15000 -> 512"),
        ({"template": "qwen_mask_results"}, "template qwen -> qwen_mask_results"),
        ({"mask_history": True}, "mask_history unset -> true"),
        ({"packing": True}, "packing unset -> true"),
        ({"neat_packing": True}, "neat_packing unset -> true"),
        ({"max_samples": 100}, "max_samples unset -> 100"),
    ],
)
def test_each_config_input_changes_the_key_and_names_itself(run, change, reason):
    before, after = inputs_of(run), inputs_of(run, **change)
    assert cache_key(before) != cache_key(after)
    assert change_reason(before, after).startswith(reason)


def test_data_file_and_tokenizer_content_change_the_key(run):
    before = inputs_of(run)
    (Path(run.values["dataset_dir"]) / "rows.jsonl").write_text('{"conversations": [1]}\n')
    after_data = inputs_of(run)
    assert change_reason(before, after_data).startswith("data file content changed (")
    (Path(run.values["model_name_or_path"]) / "tokenizer.json").write_text('{"model": "wordpiece"}')
    after_tok = inputs_of(run)
    assert change_reason(after_data, after_tok) == "tokenizer files changed"
    assert len({cache_key(before), cache_key(after_data), cache_key(after_tok)}) == 3


def test_own_template_code_and_package_versions_are_in_the_key(run, monkeypatch):
    masked = inputs_of(run, template="qwen_mask_results")
    assert tokenized_key.TEMPLATE_CODE in masked and tokenized_key.TEMPLATE_CODE not in inputs_of(run)
    monkeypatch.setattr(tokenized_key, "_version", lambda package: f"{package}-9.9")
    other = inputs_of(run, template="qwen_mask_results")
    assert "llamafactory " in change_reason(masked, other) and cache_key(masked) != cache_key(other)


def test_unchanged_inputs_and_irrelevant_keys_keep_the_key(run):
    assert cache_key(inputs_of(run)) == cache_key(inputs_of(run))
    assert cache_key(inputs_of(run)) == cache_key(
        inputs_of(run, preprocessing_num_workers=16, learning_rate=1)
    )


def fake_entry(root: Path, inputs: dict) -> Path:
    """A cache entry as the build leaves it, with made-up dataset files."""
    key = cache_key(inputs)
    entry = root / key
    (entry / DATASET / "train").mkdir(parents=True)
    (entry / DATASET / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (entry / DATASET / "train" / "data-00000-of-00001.arrow").write_bytes(bytes(range(256)) * 64)
    write_manifest(entry, key, inputs, {"rows": {"train": 3}, "encoder": "fake"})
    return entry


def test_a_complete_entry_is_accepted_and_every_damage_is_detected(run, tmp_path):
    inputs = inputs_of(run)
    key = cache_key(inputs)
    entry = fake_entry(tmp_path / "cache", inputs)
    assert check_entry(entry, key, inputs) is None
    assert check_entry(tmp_path / "cache" / "nothing", key, inputs) == "absent"

    arrow = entry / DATASET / "train" / "data-00000-of-00001.arrow"
    data = bytearray(arrow.read_bytes())
    data[100] ^= 1
    arrow.write_bytes(bytes(data))
    assert "corrupted cache" in check_entry(entry, key, inputs)
    arrow.write_bytes(bytes(data[:50]))
    assert "corrupted cache" in check_entry(entry, key, inputs)
    arrow.unlink()
    assert "data-00000-of-00001.arrow is missing or changed" in check_entry(entry, key, inputs)

    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["inputs"]["llamafactory"] = "0.9.4"
    (entry / MANIFEST).write_text(json.dumps(manifest))
    found = check_entry(entry, key, inputs)
    assert "another key" in found and "llamafactory 0.9.4 -> " in found and found.endswith("rebuilding")
    (entry / MANIFEST).write_text('{"format": ')
    assert "unreadable manifest.json" in check_entry(entry, key, inputs)
    (entry / MANIFEST).unlink()
    assert "not a cache this plugin wrote" in check_entry(entry, key, inputs)


def test_a_directory_that_is_not_ours_is_moved_aside_never_deleted(tmp_path):
    entry = tmp_path / "abc"
    entry.mkdir()
    (entry / "precious.txt").write_text("mine")
    (tmp_path / "new").mkdir()
    install(tmp_path / "new", entry)
    [moved] = tmp_path.glob("abc.not-ours-*")
    assert (moved / "precious.txt").read_text() == "mine" and not (entry / "precious.txt").exists()


def test_a_user_tokenized_path_is_honoured_with_a_warning(run, tmp_path, capsys):
    path = tmp_path / "mine"
    path.mkdir()
    (path / "dataset_dict.json").write_text("{}")
    cfg = RunConfig(path=run.path, overrides=(), values={**run.values, "tokenized_path": str(path)})
    assert tokenized_overrides(cfg) == ()
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [line for line in out if "NOT checked for staleness" in line] and len(out) == 1


def fake_build(path: Path, args: dict) -> dict:
    """Stands in for LLaMA-Factory's build in unit tests: a dataset whose bytes depend on the args."""
    (path / "train").mkdir(parents=True)
    (path / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (path / "train" / "data.arrow").write_text(json.dumps(args, sort_keys=True))
    return {"rows": {"train": 1}, "encoder": "fake"}


def launch_line(cfg: RunConfig, capsys) -> str:
    [override] = tokenized_overrides(cfg)
    [line] = capsys.readouterr().out.strip().splitlines()
    assert override == "tokenized_path=" + line.split(" ", 4)[4].split(" (")[0]
    return line.removeprefix("[arpo-sft] tokenized dataset: ")


def test_launches_reuse_rebuild_with_the_reason_and_never_use_a_bad_cache(run, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(tokenized_build, "run_build", fake_build)
    monkeypatch.setattr("arpo_train_sft.lf.tokenize.data_arg_names", lambda: NAMES)
    monkeypatch.setenv("ARPO_SFT_CACHE", str(tmp_path / "cache"))
    first = launch_line(run, capsys)
    assert first.startswith("built ") and first.endswith("/dataset (first build)")
    path = first.split(" ")[1]
    assert launch_line(run, capsys) == f"reused {path}"

    short = RunConfig(path=run.path, overrides=(), values={**run.values, "cutoff_len": 512})
    assert launch_line(short, capsys).endswith("(cutoff_len 15000 -> 512)")
    assert launch_line(run, capsys) == f"reused {path}"  # the old entry is still there, still valid

    (Path(path) / "train" / "data.arrow").write_text("garbage")
    line = launch_line(run, capsys)
    assert line.startswith(f"built {path} (found a corrupted cache in ") and line.endswith("rebuilding)")
    assert launch_line(run, capsys) == f"reused {path}"

    entry = Path(path).parent
    (entry / MANIFEST).unlink()
    assert "not a cache this plugin wrote; rebuilding)" in launch_line(run, capsys)
    assert len(list(entry.parent.glob(f"{entry.name}.not-ours-*"))) == 1
    assert launch_line(run, capsys) == f"reused {path}"


# ----- integration: the real build (LLaMA-Factory in a child process) and the real launch -----

COMPARE = r"""
import json, sys
from datasets import load_from_disk
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
import arpo_train_sft.lf.masking
for args, cached in json.loads(sys.argv[1]):
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    fresh = get_dataset(template, model_args, data_args, training_args, stage="sft", **module)["train_dataset"]
    reused = load_from_disk(cached)["train"]
    assert fresh.features == reused.features, (fresh.features, reused.features)
    assert fresh.data.table.equals(reused.data.table), cached
    print("SAME", args["template"], len(reused))
"""


def tokenized_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "tokenized dataset:" in line]


@pytest.mark.integration
def test_launch_builds_once_and_the_ranks_only_load(demo_run):
    result, output_dir = demo_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [line] = tokenized_lines(result.stdout)
    assert line.startswith("[arpo-sft] tokenized dataset: built ") and line.endswith("/dataset (first build)")
    path = line.split(" built ")[1].split(" (")[0]
    log = (output_dir / "training.log").read_text()
    assert f"tokenized_path={path}" in log
    assert f"Loaded tokenized dataset from {path}." in log
    assert "Running tokenizer on dataset" not in log and "Converting format of dataset" not in log


@pytest.mark.integration
def test_relaunch_reuses_and_the_cache_equals_llamafactorys_own(demo_run, checkout, monkeypatch, capsys):
    result, _ = demo_run
    built = tokenized_lines(result.stdout)[0].split(" built ")[1].split(" (")[0]
    monkeypatch.chdir(checkout)
    overrides = DEMO_OVERRIDES
    cfg = load_run_config(Path("yaml/demo_cpu.yaml"), overrides)
    assert tokenized_overrides(cfg) == (f"tokenized_path={built}",)
    assert tokenized_lines(capsys.readouterr().out) == [f"[arpo-sft] tokenized dataset: reused {built}"]

    masked_cfg = load_run_config(Path("yaml/demo_cpu.yaml"), (*overrides, "template=qwen_mask_results"))
    [masked] = tokenized_overrides(masked_cfg)
    [line] = tokenized_lines(capsys.readouterr().out)
    assert line.endswith("(template qwen -> qwen_mask_results)"), line

    def rank_args(cfg: RunConfig, out: str) -> dict:
        args = {k: v for k, v in cfg.values.items() if k not in ("deepspeed", "tokenized_path")}
        return {**args, "output_dir": out, "overwrite_cache": True}

    pairs = [[rank_args(cfg, "o1"), built], [rank_args(masked_cfg, "o2"), masked.split("=", 1)[1]]]
    proc = subprocess.run(
        [sys.executable, "-c", COMPARE, json.dumps(pairs)],
        cwd=checkout,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SAME qwen 300" in proc.stdout and "SAME qwen_mask_results 300" in proc.stdout
    # What made them equal was the tiktoken path, not the tokenizer's own encode.
    for _, cached in pairs:
        assert json.loads((Path(cached).parent / MANIFEST).read_text())["encoder"] == fastbpe.USED
