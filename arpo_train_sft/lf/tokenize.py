"""Tokenize a run's dataset with LLaMA-Factory's own preprocessing, in one process, before torchrun.

    python -m arpo_train_sft.lf.tokenize < SPEC.json

SPEC, read on stdin, holds `args` (the run's data-related arguments, as LLaMA-Factory's parser takes them)
and `path` (where `DatasetDict.save_to_disk` writes). Secret arguments (hub tokens) come from the
environment variable secrets.SECRET_ARGS_ENV instead, so that no file ever holds them. The ranks later
get `tokenized_path=<path>` and load it with `load_from_disk`, so what they train on is what `get_dataset`
made here, exactly as it would have made it on rank 0. Only the tokenizer's per-piece `encode` may
differ: `fastbpe` routes it through tiktoken when it can prove the ids equal. The last stdout line is one
JSON object: {"rows": {split: n}, "encoder": how text was encoded} or {"error": ..., "errno": ...}.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..secrets import SECRET_ARGS_ENV, secret_args

# Tokenizer-loading fields of ModelArguments (`load_tokenizer`, `patch_tokenizer`, the hub download).
_TOKENIZER_MODEL_ARGS = (
    "model_name_or_path",
    "cache_dir",
    "use_fast_tokenizer",
    "resize_vocab",
    "split_special_tokens",
    "add_tokens",
    "add_special_tokens",
    "new_special_tokens_config",
    "init_special_tokens",
    "model_revision",
    "hf_hub_token",
    "ms_hub_token",
    "om_hub_token",
    "trust_remote_code",
)
# Beyond model and data arguments, what `get_dataset` reads: the stage picks the processor, the seed
# shuffles the `val_size` split, `predict_with_generate` shapes eval rows.
_RUN_ARGS = ("stage", "finetuning_type", "do_train", "do_eval", "seed", "predict_with_generate")
# Data arguments the build sets itself: streaming cannot be saved, the cache is our own.
_BUILD_OWNED = ("tokenized_path", "streaming", "buffer_size", "overwrite_cache", "data_shared_file_system")


def data_arg_names() -> set[str]:
    """The config keys that can change what LLaMA-Factory's preprocessing makes of the data."""
    data = _dataclass_fields("hparams/data_args.py", "DataArguments") - set(_BUILD_OWNED)
    processor = _dataclass_fields("hparams/model_args.py", "ProcessorArguments")
    return data | processor | set(_TOKENIZER_MODEL_ARGS) | set(_RUN_ARGS)


def _dataclass_fields(module: str, name: str) -> set[str]:
    """The field names of LLaMA-Factory's dataclass `name`, read from its source without importing it.

    Importing `llamafactory.hparams` costs the launcher seconds of CPU (torch, transformers, peft) before
    torchrun starts, only to read names; tests/lf/test_surface.py checks these equal `dataclasses.fields`.
    """
    spec = importlib.util.find_spec("llamafactory")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llamafactory")
    source = Path(next(iter(spec.submodule_search_locations))) / module
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return {
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise RuntimeError(f"LLaMA-Factory's {module} no longer defines {name}")


def build(args: dict[str, Any], path: Path) -> tuple[dict[str, int], str]:
    """Run `get_dataset` as LLaMA-Factory's SFT workflow does, saving to `path`; rows per split, encoder."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer
    from transformers.utils import logging as transformers_logging

    from . import masking  # noqa: F401  (registers qwen_mask_results, as on the ranks)
    from .fastbpe import USED, accelerate

    with tempfile.TemporaryDirectory() as scratch:
        parsed = {**args, "tokenized_path": str(path), "output_dir": scratch, "report_to": "none"}
        parsed.update(streaming=False, overwrite_cache=True)
        model_args, data_args, training_args, finetuning_args, _ = get_train_args(parsed)
        # The parser turns transformers' logging up to info (config dumps); this child only tokenizes.
        transformers_logging.set_verbosity_warning()
        tokenizer_module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
        refused = accelerate(tokenizer_module["tokenizer"])
        encoder = USED if refused is None else f"the tokenizer itself ({refused})"
        print(f"encoder: {encoder}", flush=True)
        module = get_dataset(
            template, model_args, data_args, training_args, stage=finetuning_args.stage, **tokenizer_module
        )
    splits = {"train": module.get("train_dataset")}
    evals = module.get("eval_dataset")
    if isinstance(evals, dict):
        splits.update(evals)
    elif evals is not None:
        splits["validation"] = evals
    return {name: len(split) for name, split in splits.items() if split is not None}, encoder


def main() -> None:
    spec = json.load(sys.stdin)
    # Taken out of the environment, so the data loader's worker processes do not carry them too.
    args = {**spec["args"], **secret_args({SECRET_ARGS_ENV: os.environ.pop(SECRET_ARGS_ENV, "")})}
    if not sys.stderr.isatty():
        # datasets' bars are for a person watching; in a log they are thousands of carriage returns.
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    try:
        rows, encoder = build(args, Path(spec["path"]))
    except OSError as err:
        print(json.dumps({"error": err.strerror or str(err), "errno": err.errno}), flush=True)
        sys.exit(3)
    print(json.dumps({"rows": rows, "encoder": encoder}), flush=True)


if __name__ == "__main__":
    main()
