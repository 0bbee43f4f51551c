"""Preflight on the files a run reads and writes: model, dataset, DeepSpeed JSON, output_dir."""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shutil
from pathlib import Path

from ...config import RunConfig, global_batch
from ...demo.model import DEMO_MODEL_DIR
from ...errors import UserError
from .rows import FAIL, OK, SKIP, WARN, Plan, Row

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ARPO_HUB_FILE = "final_5w4_still.jsonl"
_HUB_SOURCES = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
# A tokenizer directory has its config plus one vocabulary file in one of these forms.
_TOKENIZER_VOCABS = ("tokenizer.json", "vocab.json", "tokenizer.model", "qwen.tiktoken")


def is_demo_model(cfg: RunConfig) -> bool:
    """Whether the config trains the tiny offline model that the launcher can build itself."""
    return Path(str(cfg.values.get("model_name_or_path", ""))) == DEMO_MODEL_DIR


def check_model(plan: Plan) -> list[Row]:
    """A local directory with config.json and tokenizer files, or a hub id (ideally in the local cache)."""
    name, where = str(plan.cfg.values.get("model_name_or_path", "")), plan.where
    if not name:
        return [
            Row(
                "model",
                FAIL,
                "key 'model_name_or_path' is missing",
                "set a local model dir or a hub id",
                where,
            )
        ]
    path = Path(name)
    if is_demo_model(plan.cfg) and not path.is_dir():
        return [Row("model", OK, f"{path}: the tiny demo model, built before launch")]
    if path.is_dir():
        missing = [] if (path / "config.json").is_file() else ["config.json"]
        if not (path / "tokenizer_config.json").is_file() or not any(
            (path / f).is_file() for f in _TOKENIZER_VOCABS
        ):
            missing.append("tokenizer files (tokenizer_config.json + tokenizer.json or vocab.json)")
        if missing:
            return [
                Row(
                    "model",
                    FAIL,
                    f"model_name_or_path {path} has no {' and no '.join(missing)}",
                    "point it at a complete model directory (as `hf download` writes it)",
                    where,
                )
            ]
        return [Row("model", OK, f"{path}: config.json and tokenizer present")]
    if _HUB_ID.match(name) and not name.startswith(("./", "../")) and not path.parent.is_dir():
        from ..shapes import cached_hub_config

        if cached_hub_config(name) is not None:
            return [Row("model", OK, f"hub id {name}, in the local cache")]
        return [
            Row(
                "model",
                WARN,
                f"hub id {name} is not in the local cache: rank 0 downloads it at start",
                f"download it first: `hf download {name}`",
            )
        ]
    return [
        Row(
            "model",
            FAIL,
            f"model_name_or_path {path} not found",
            f"download it (`hf download Qwen/Qwen2.5-7B-Instruct --local-dir {path}`) or use a hub id",
            where,
        )
    ]


def dataset_files(cfg: RunConfig) -> list[Path]:
    """The local files of the datasets in `dataset:` that exist (hub datasets have none)."""
    dataset_dir = Path(str(cfg.values.get("dataset_dir", "data")))
    try:
        registry = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = [n.strip() for n in str(cfg.values.get("dataset", "")).split(",") if n.strip()]
    entries = [registry[name] for name in names if isinstance(registry.get(name), dict)]
    paths = [
        dataset_dir / e["file_name"] for e in entries if "file_name" in e and not set(e) & set(_HUB_SOURCES)
    ]
    return [path for path in paths if path.is_file()]


def check_dataset(plan: Plan) -> list[Row]:
    """Every dataset in `dataset:` is registered, and every local file it names exists."""
    cfg, where = plan.cfg, plan.where
    dataset_dir = Path(str(cfg.values.get("dataset_dir", "data")))
    info_path = dataset_dir / "dataset_info.json"
    names = [n.strip() for n in str(cfg.values.get("dataset", "")).split(",") if n.strip()]
    if not names:
        return [Row("dataset", FAIL, "key 'dataset' is missing", f"name one from {info_path}", where)]
    if not info_path.is_file():
        return [
            Row(
                "dataset",
                FAIL,
                f"{info_path} not found",
                "run from the repo root or fix 'dataset_dir'",
                where,
            )
        ]
    try:
        registry = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [Row("dataset", FAIL, f"not valid JSON ({err})", "fix the file", str(info_path))]
    rows = []
    for name in names:
        entry = registry.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, registry, n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"register it in {info_path}"
            rows.append(Row("dataset", FAIL, f"dataset '{name}' is not in {info_path}", fix, where))
        elif any(key in entry for key in _HUB_SOURCES):
            rows.append(Row("dataset", OK, f"{name}: from the hub"))
        elif not (dataset_dir / entry.get("file_name", "")).is_file():
            data_path = dataset_dir / entry.get("file_name", "")
            fix = (
                "download and prepare it: `arpo-sft data download && "
                "arpo-sft data prepare --model Qwen/Qwen2.5-7B-Instruct`"
                if entry.get("file_name") == ARPO_HUB_FILE
                else f"put the file there or fix 'file_name' in {info_path}"
            )
            rows.append(Row("dataset", FAIL, f"dataset '{name}': file {data_path} not found", fix, where))
        else:
            rows.append(Row("dataset", OK, f"{name}: {dataset_dir / entry['file_name']}"))
    return rows


def check_deepspeed_file(plan: Plan) -> list[Row]:
    """The DeepSpeed JSON exists and parses; its stage and offload, for the memory check to weigh."""
    value = plan.cfg.values.get("deepspeed")
    if not value:
        return [Row("deepspeed", OK, "none: plain DDP")]
    path = Path(str(value))
    if not path.is_file():
        return [
            Row(
                "deepspeed",
                FAIL,
                f"deepspeed config {path} not found",
                "use one of examples/deepspeed/*.json",
                plan.where,
            )
        ]
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        return [Row("deepspeed", FAIL, f"not valid JSON ({err})", "fix the file", str(path))]
    zero = config.get("zero_optimization", {}) if isinstance(config, dict) else None
    sections = (
        [zero.get(f"offload_{part}", {}) for part in ("optimizer", "param")] if isinstance(zero, dict) else []
    )
    if not isinstance(zero, dict) or not all(isinstance(section, dict) for section in sections):
        found = "expected a JSON object with a zero_optimization object (and offload_* objects in it)"
        return [Row("deepspeed", FAIL, found, "use one of examples/deepspeed/*.json as a base", str(path))]
    parts = zip(("optimizer", "param"), sections, strict=True)
    offloaded = [part for part, section in parts if section.get("device", "none") != "none"]
    offload = f", {' and '.join(offloaded)} offloaded to CPU" if offloaded else ""
    # Whether this stage/offload fits the GPUs is the memory row's to say (train/estimate.py).
    return [Row("deepspeed", OK, f"{path}: ZeRO-{zero.get('stage', 0)}{offload}")]


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _saves(plan: Plan) -> int | None:
    """How many checkpoints the run writes, from max_steps or epochs x rows / global batch; None if unknown."""
    from .environment import world_size
    from .sizes import count_rows

    values = plan.cfg.values
    if str(values.get("save_strategy", "steps")).lower() == "no":
        return 0  # no checkpoint at all (bench/gpu_throughput.py's runs): only the final model
    try:
        steps = values.get("max_steps", -1)
        if steps <= 0:
            rows = sum(count_rows(path) for path in dataset_files(plan.cfg) if path.suffix == ".jsonl")
            if not rows:
                return None
            rows = min(rows, values.get("max_samples") or rows)
            batch = global_batch(values, world_size(plan))
            if batch is None:
                return None
            steps = math.ceil(values.get("num_train_epochs", 3.0) * math.ceil(rows / batch))
        save_steps = values.get("save_steps", 500)
        return int(1 / save_steps) if save_steps < 1 else int(steps // save_steps)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):  # the values row names the bad number
        return None


def check_output_dir(plan: Plan) -> list[Row]:
    """output_dir writable, disk enough for the checkpoints kept, and what a relaunch will do."""
    from ..estimate.terms import read_setup
    from .sizes import FINAL_MODEL_BYTES_PER_PARAM, checkpoint_bytes, model_params

    if plan.cfg.output_dir_problem():
        return [Row("output_dir", SKIP, "not checked: see the values row")]
    out = plan.cfg.output_dir
    if out.exists() and not out.is_dir():
        return [
            Row(
                "output_dir",
                FAIL,
                f"output_dir {out} is a file",
                "point output_dir at a directory",
                plan.where,
            )
        ]
    base = _existing_parent(out)
    if not os.access(base, os.W_OK):
        return [
            Row(
                "output_dir",
                FAIL,
                f"output_dir {out}: {base} is not writable",
                "choose a writable path",
                plan.where,
            )
        ]
    rows = [Row("output_dir", OK, f"{out}: writable")]
    free = shutil.disk_usage(base).free
    if is_demo_model(plan.cfg):
        return rows + [
            Row("disk", OK, f"{free / 1e9:.0f} GB free; the tiny demo model needs a few MB"),
            resume_row(plan),
        ]
    params, source = model_params(str(plan.cfg.values.get("model_name_or_path", "")))
    saves, limit = _saves(plan), plan.cfg.values.get("save_total_limit")
    kept = min(saves, limit) if saves is not None and limit else (saves if saves is not None else limit)
    unknown = "model size" if params is None else ""
    try:
        per_param = sum(checkpoint_bytes(read_setup(plan.cfg)))
    except UserError as err:  # with a known model: a batch or DeepSpeed value, which its own row names too
        per_param, unknown = 0, unknown or f"checkpoint size ({err.problems[0]})"
    if kept is None and not unknown:
        unknown = "number of checkpoints (set max_steps or save_total_limit)"
    if unknown:
        rows.append(
            Row("disk", WARN, f"{free / 1e9:.0f} GB free; {unknown} unknown", "check the space by hand")
        )
    else:
        need = params * (kept * per_param + FINAL_MODEL_BYTES_PER_PARAM)
        found = (
            f"need ~{need / 1e9:.1f} GB ({kept} checkpoint(s) x {params * per_param / 1e9:.1f} "
            f"GB + final model; {params / 1e9:.2f}B params from {source}), {free / 1e9:.0f} GB free"
        )
        fix = "free space, or set save_total_limit (e.g. 2) / a larger save_steps"
        rows.append(Row("disk", OK, found) if need <= free else Row("disk", FAIL, found, fix, plan.where))
    return rows + [resume_row(plan)]


def resume_row(plan: Plan) -> Row:
    """What a relaunch will do with output_dir: resume, start fresh, or refuse (the launcher's own decision)."""
    from ...checkpoint.resume import decide
    from .environment import world_size

    decision = decide(plan.cfg, plan.fresh, world_size(plan))
    skipped = (
        f"; {len(decision.incomplete)} incomplete checkpoint(s) set aside" if decision.incomplete else ""
    )
    if decision.action == "refuse":
        return Row("resume", FAIL, decision.summary, decision.fix, plan.where)
    if decision.fix:
        return Row("resume", WARN, decision.summary, decision.fix, plan.where)
    return Row("resume", WARN if skipped else OK, decision.summary + skipped)
