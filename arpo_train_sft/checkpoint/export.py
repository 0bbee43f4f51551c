"""`arpo-sft export`: a training checkpoint (DeepSpeed ZeRO shards) to a loadable Hugging Face model dir."""

from __future__ import annotations

import argparse
import contextlib
import pickle
import shutil
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import check_outputs, disk_filled, disk_full
from ..errors import UserError
from .card import model_card
from .scan import CheckpointScan, scan

# Copied as they are, so the export tokenizes and generates exactly as training did; this
# generation_config.json replaces the one transformers derives from config.json.
COPIED_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",
)
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Half a unit in the last place, relative: the most round-to-nearest moves a weight in each format;
# the absolute part covers values below fp16's smallest normal number.
RTOL = {"bf16": 2.0**-8, "fp16": 2.0**-11, "fp32": 0.0}
ATOL = {"bf16": 1e-7, "fp16": 1e-7, "fp32": 0.0}
PROBE = [{"role": "user", "content": "What is 17 * 23? Use python, then answer in \\boxed{}."}]
FIX = "export an earlier complete checkpoint, or copy the file back from where the run saved it"


@dataclass(frozen=True)
class Source:
    """Where the weights come from: ZeRO shards under tag_dir, or a saved model when tag_dir is None."""

    path: Path
    tag_dir: Path | None
    world: int | None  # data-parallel ranks that wrote the shards
    stage: int | None
    tokenizer_dir: Path
    config: Any  # transformers.PretrainedConfig


@dataclass(frozen=True)
class Report:
    """What the export looked like once loaded back."""

    params: int
    dtype: str
    shards: list[str]
    bytes_on_disk: int
    compared: list[str]


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _raise_problems(found: CheckpointScan) -> None:
    if found.weight_problems:
        raise UserError([f"{p.file}: {p.reason}; {p.fix or FIX}" for p in found.weight_problems])


def _confirm_zero(found: CheckpointScan) -> CheckpointScan:
    """Scan again with the world size and stage the model states record."""
    from .layout import deepspeed_record

    # Model states record the world size and DeepSpeed config: this also names a rank whose files are
    # all gone, and tells ZeRO-1 from 2.
    meta = deepspeed_record(found.tag_dir)
    world = max(found.world, int(meta.get("dp_world_size", found.world)))
    stage = meta.get("ds_config", {}).get("zero_optimization", {}).get("stage", found.stage)
    found = scan(found.path, world=world, stage=int(stage))
    _raise_problems(found)
    return found


def read_config(path: Path) -> Any:
    """The transformers config of the model in `path`, or one line naming config.json and the fix."""
    import json

    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    where, fix = path / "config.json", "restore the config.json the model was saved with"
    try:  # transformers indexes whatever JSON it finds as a dict: a list or a string would be a TypeError
        shape = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise UserError(f"{where}: cannot be read as JSON ({_one_line(err)}); {fix}") from None
    if not isinstance(shape, dict):
        kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(type(shape))
        raise UserError(f"{where}: holds {kind or 'a number'}, not a JSON object; {fix}")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, TypeError, StrictDataclassError) as err:
        raise UserError(f"{where}: {_one_line(err)}; {fix}") from None


def inspect_source(path: Path) -> Source:
    """Check that path is a ZeRO checkpoint or a saved model, with a config and a tokenizer."""
    if not path.is_dir():
        raise UserError(f"{path}: not a directory; pass a checkpoint-N/ dir or a finished run's output_dir")
    found = scan(path)
    _raise_problems(found)  # first the file names and zip directories, before DeepSpeed fails obscurely
    if found.tag_dir is not None:
        found = _confirm_zero(found)
    config = read_config(path)  # before any heavy work: the architecture the weights go into
    tokenizer_dir = next((d for d in (path, path.parent) if (d / "tokenizer_config.json").is_file()), None)
    if tokenizer_dir is None:
        raise UserError(
            f"no tokenizer in {path} or its parent {path.parent}: copy the base model's tokenizer files "
            f"(tokenizer.json, tokenizer_config.json) into {path}"
        )
    return Source(path, found.tag_dir, found.world, found.stage, tokenizer_dir, config)


def consolidate(source: Source) -> dict[str, Any]:
    """The full fp32 state dict: DeepSpeed's own ZeRO consolidation, or the saved safetensors."""
    from safetensors.torch import load_file

    if source.tag_dir is None:
        files = sorted(source.path.glob("*.safetensors"))
        return {key: tensor.float() for f in files for key, tensor in load_file(f).items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's progress lines; stdout is our report
            return get_fp32_state_dict_from_zero_checkpoint(str(source.path), tag=source.tag_dir.name)
    except (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise UserError(f"{source.tag_dir}: DeepSpeed cannot read it ({_one_line(err)}); {FIX}") from None


def build_model(source: Source, state: dict[str, Any], dtype: str):
    """The checkpoint's architecture holding `state`, cast to dtype."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # no random init of weights that are replaced right away
        model = AutoModelForCausalLM.from_config(source.config)
    where = f"{source.path}: the weights do not match config.json"
    fix = "put the config.json the run trained with next to the weights"
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shapes that differ from config.json
        raise UserError(f"{where} ({_one_line(err)}); {fix}") from None
    if source.config.get_text_config().tie_word_embeddings:
        model.tie_weights()  # Qwen2.5 up to 3B share lm_head with embed_tokens; a state dict may hold it once
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing or result.unexpected_keys:
        raise UserError(f"{where} (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}); {fix}")
    return model.to(getattr(torch, DTYPES[dtype]))


def verify(out: Path, reference: dict[str, Any], dtype: str) -> Report:
    """Load out as a user would, run one chat-templated forward pass, and compare weights with reference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt")).logits
    loaded = model.state_dict()
    close = [torch.allclose(loaded[n].float(), ref, RTOL[dtype], ATOL[dtype]) for n, ref in reference.items()]
    # Our bug (or a broken install), not the user's input: keep the traceback.
    if str(model.dtype) != f"torch.{DTYPES[dtype]}" or not all(close) or not torch.isfinite(logits).all():
        raise RuntimeError(f"{out}: loads as {model.dtype}; weights match {close}; finite logits required")
    files = [f for f in out.rglob("*") if f.is_file()]
    shards = sorted(f.name for f in files if f.suffix == ".safetensors")
    params = sum(p.numel() for p in model.parameters())
    return Report(params, DTYPES[dtype], shards, sum(f.stat().st_size for f in files), list(reference))


def shard_size(text: str) -> int:
    """`--max-shard-size` in bytes, parsed by the function save_pretrained itself uses (5GB, 500MB, 1.5GB)."""
    from huggingface_hub.serialization._base import parse_size_to_int

    try:
        size = parse_size_to_int(text)
    except (ValueError, OverflowError):
        size = 0
    if size <= 0:
        raise UserError(
            f"--max-shard-size {text!r}: not a size; fix: a positive number with a unit KB, MB, GB or TB, "
            "e.g. 5GB or 500MB"
        )
    return size


def export(checkpoint: Path, out_dir: Path, dtype: str = "bf16", max_shard_size: str = "5GB") -> Report:
    """Consolidate, cast and save checkpoint into out_dir via a sibling temp dir, verified before the rename."""
    check_outputs({"CHECKPOINT": checkpoint}, {}, folders={"OUT_DIR": out_dir})
    shard_bytes = shard_size(max_shard_size)
    source = inspect_source(checkpoint)
    partial = out_dir.with_name(f"{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    except OSError as err:
        if disk_filled(err):
            raise disk_full(out_dir, "nothing was exported") from None
        raise
    try:
        state = consolidate(source)
        # Three distinct tensors (a tied lm_head is the embedding again) to check the saved files against.
        first_name = {id(tensor): name for name, tensor in reversed(state.items())}
        names = [name for name in state if first_name[id(state[name])] == name]
        picks = dict.fromkeys([names[0], names[len(names) // 2], names[-1]])
        reference = {name: state[name].float() for name in picks}
        build_model(source, state, dtype).save_pretrained(partial, max_shard_size=shard_bytes)
        del state
        for name in COPIED_FILES:
            found = [d / name for d in (source.path, source.tokenizer_dir) if (d / name).is_file()]
            if found:
                shutil.copy2(found[0], partial / name)
        (partial / "README.md").write_text(model_card(source, out_dir.name, dtype), encoding="utf-8")
        report = verify(partial, reference, dtype)
        try:
            partial.rename(out_dir)  # replaces an empty out_dir; fails on one that filled up meanwhile
        except OSError:
            raise UserError(
                f"{out_dir}: appeared while exporting and is not empty; pass a new OUT_DIR"
            ) from None
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)  # only the temp dir made above, never the user's files
        if disk_filled(err):  # config.json, a safetensors shard (Rust's IoError), a copied tokenizer file
            raise disk_full(out_dir, "it was not created, and the partial copy was removed") from None
        raise
    return report


def run(args: argparse.Namespace) -> int:
    """Export, then print what was verified."""
    report = export(Path(args.checkpoint), Path(args.out_dir), args.dtype, args.max_shard_size)
    print(f"exported {args.checkpoint} -> {args.out_dir}")
    print(
        f"verified: AutoModelForCausalLM and AutoTokenizer load it, a chat-templated forward pass runs, "
        f"and {', '.join(report.compared)} match the checkpoint"
    )
    print(
        f"{report.params:,} parameters, {report.dtype}, {len(report.shards)} shard(s) "
        f"({', '.join(report.shards)}), {report.bytes_on_disk / 2**20:.1f} MiB on disk"
    )
    hand_off(Path(args.out_dir))
    return 0


def hand_off(out: Path) -> None:
    """The hand-off checks that need only the export: does it stop on <|im_end|>, and prompt as training did.

    A failure is printed, not an exit status: the export is complete and faithful to the checkpoint, and
    the fix is in the files it copied from the run (see `arpo-sft handoff`).
    """
    from ..handoff.command import export_checks
    from ..handoff.rows import print_table

    checks = export_checks(out)
    print_table(checks, f"hand-off to RL (every check: arpo-sft handoff {out})")
    failed = [check for check in checks if not check.ok]
    if failed:
        print(
            f"{len(failed)} hand-off check(s) failed: fix them before RL, then run `arpo-sft handoff {out}`"
        )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` to the command tree."""
    parser = subparsers.add_parser(
        "export",
        help="turn a checkpoint (DeepSpeed ZeRO shards) into a Hugging Face model dir, verified to load",
        description="Consolidate CHECKPOINT's ZeRO shards with DeepSpeed's own zero_to_fp32, cast to --dtype, "
        "save as safetensors with the tokenizer, generation config, chat template and a model card, then "
        "load the result back and run one forward pass. OUT_DIR appears only once all of that succeeded.",
        epilog="example:\n  arpo-sft export checkpoints/qwen2.5-7b-sft/checkpoint-3000 exports/qwen2.5-7b-arpo-sft",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a checkpoint-N/ dir, or a finished run's output_dir")
    parser.add_argument("out_dir", help="new directory for the model (must not exist, or be empty)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="bf16", help="weight dtype (default: bf16)"
    )
    parser.add_argument(
        "--max-shard-size", default="5GB", help="largest safetensors file: KB, MB, GB or TB (default: 5GB)"
    )
    parser.set_defaults(func=run)
