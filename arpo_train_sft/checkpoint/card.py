"""The model card (README.md) `arpo-sft export` writes: where the weights came from and how they were trained."""

from __future__ import annotations

import enum
import json
import pickle
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ENTRY_MODULE, global_batch
from ..errors import UserError
from ..secrets import redact

if TYPE_CHECKING:
    from .export import Source

CARD_KEYS = (
    "model_name_or_path",
    "dataset",
    "template",
    "cutoff_len",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
)


def _launch(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """The YAML + overrides of the run's last launch: `arpo-sft train` heads training.log with its command."""
    from ..config import load_run_config

    log = run_dir / "training.log"
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    heads = [line.split(" ", 2)[2] for line in lines if line.startswith("===== ") and line.count(" ") >= 2]
    try:
        argv = shlex.split(heads[-1]) if heads else []
    except (
        ValueError
    ):  # a header torn by a full disk or an edit: the card says `?` rather than fail the export
        argv = []
    at = argv.index(ENTRY_MODULE) + 1 if ENTRY_MODULE in argv else len(argv)
    if at >= len(argv):
        return "", {}
    try:
        return shlex.join(argv[at:]), load_run_config(Path(argv[at]), argv[at + 1 :]).values
    except UserError:  # the YAML moved or broke since: the card says so rather than failing the export
        return shlex.join(argv[at:]) + " (unreadable now)", {}


def _training_args(path: Path) -> dict[str, Any]:
    import torch

    try:  # the Trainer's pickle of its own arguments: this run's exact hyperparameters
        args = vars(torch.load(path / "training_args.bin", weights_only=False))
    except (OSError, EOFError, AttributeError, ModuleNotFoundError, pickle.UnpicklingError, RuntimeError):
        return {}
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in args.items()}


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON object the card only quotes from; torn, missing or another shape leaves its rows at `?`."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def model_card(source: Source, out_name: str, dtype: str) -> str:
    """A short README.md: base model, data, hyperparameters, steps and the exact source checkpoint."""
    launch, values = _launch(source.path.parent if source.tag_dir else source.path)
    values |= _training_args(source.path)  # the pickled arguments beat a YAML that may have changed since
    state = _json_object(source.path / "trainer_state.json")
    config = _json_object(source.path / "config.json")
    base = values.get("model_name_or_path") or config.get("_name_or_path")
    rows = [(key, values.get(key, "?")) for key in CARD_KEYS]
    rows += [("global_step", state.get("global_step", "?")), ("epoch", state.get("epoch", "?"))]
    # Only a recorded micro-batch: the card never states transformers' default as this run's. A YAML edited
    # since may hold anything, which global_batch turns into None.
    if source.world and "per_device_train_batch_size" in values:
        batch = global_batch(values, source.world)
        if batch is not None:
            rows.append(("sequences per step", f"{batch} ({source.world} ranks)"))
    rows.append(("launch", f"`{launch}`" if launch else "? (no `arpo-sft train` header in training.log)"))
    origin = f"`{source.path.resolve()}`"
    if source.tag_dir is not None:
        origin = f"the DeepSpeed ZeRO-{source.stage} checkpoint {origin} ({source.tag_dir.name})"
    front = "library_name: transformers\n" + (f"base_model: {base}\n" if base else "")
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return redact(
        f"---\n{front}tags: [arpo, sft, llama-factory]\n---\n\n# {out_name}\n\nARPO cold-start SFT, exported "
        f"by `arpo-sft export` from {origin} with {dtype} weights. `?`: not recorded.\n\n"
        f"| | |\n| --- | --- |\n{table}\n"
    )
