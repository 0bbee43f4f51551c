"""A training YAML plus `key=value` overrides, read exactly as LLaMA-Factory will read them on the ranks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .secrets import remember

# What torchrun runs on every rank, given the config and its overrides: `python -m ENTRY_MODULE CONFIG [k=v ...]`.
# Users' training.log and model cards name it, so it keeps this name.
ENTRY_MODULE = "arpo_train_sft.entry"
# Settings that need a CUDA device; a config without any of them can train on CPU ranks.
_GPU_ONLY_FLAGS = ("bf16", "fp16", "pure_bf16", "enable_liger_kernel", "use_unsloth")
_GPU_ONLY_ATTENTION = ("fa2", "fa3")


@dataclass(frozen=True)
class RunConfig:
    """A training config as the ranks will see it: the file, the overrides and the merged values."""

    path: Path
    overrides: tuple[str, ...]
    values: dict[str, Any]

    def output_dir_problem(self) -> str | None:
        """Why output_dir cannot be a run's directory (null, empty, not text), or None when it can."""
        value = self.values.get("output_dir", ".")
        if not isinstance(value, str) or not value.strip():
            return f"output_dir: {value!r} is not a directory path"
        return None

    @property
    def output_dir(self) -> Path:
        return Path(str(self.values.get("output_dir", ".")))

    def gpu_only_settings(self) -> list[str]:
        """The settings that cannot run on a CPU, as `key: value` strings."""
        found = [f"{key}: true" for key in _GPU_ONLY_FLAGS if self.values.get(key) is True]
        if str(self.values.get("flash_attn", "auto")) in _GPU_ONLY_ATTENTION:
            found.append(f"flash_attn: {self.values['flash_attn']}")
        return found


def load_run_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read `path` and apply `key=value` overrides with OmegaConf, as LLaMA-Factory's `read_args` does."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    import yaml

    if not path.is_file():
        raise UserError(f"{path}: config file not found; pass a YAML from yaml/ (e.g. yaml/demo_cpu.yaml)")
    try:
        # LLaMA-Factory's own reading: OmegaConf's YAML, where `7e-6` is a float (PyYAML makes it a string).
        raw = OmegaConf.load(path)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({err.problem}); fix the syntax on that line") from None
    except (UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise UserError(f"{path}: cannot be read as YAML ({err}); save it as UTF-8 YAML") from None
    except OSError:  # OmegaConf's answer to a file that is one scalar
        raw = None
    if not isinstance(raw, DictConfig):
        raise UserError(f"{path}: expected a mapping of `key: value` lines at the top level")

    bad = [item for item in overrides if "=" not in item or item.startswith("=")]
    if bad:
        raise UserError([f"override {item!r}: expected key=value (e.g. max_steps=10)" for item in bad])
    merged = OmegaConf.merge(raw, OmegaConf.from_dotlist(list(overrides)))
    values = OmegaConf.to_container(merged)
    remember(values)
    # A NUL byte cuts a path short in the OS and makes pathlib raise; no key of a config means one.
    nul = [
        f"{path}: key '{key}' holds a NUL byte; remove it" for key, value in values.items() if _has_nul(value)
    ]
    if nul:
        raise UserError(
            nul
        )  # a hub_token in this config is masked in everything printed or written from now on
    return RunConfig(path=path, overrides=tuple(overrides), values=values)


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if depth > 32:  # deeper than any LLaMA-Factory key nests; YAML anchors cannot make it cyclic here
        return False
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_has_nul(item, depth + 1) for item in items)


def batch_sizes(values: Mapping[str, Any]) -> tuple[Any, Any]:
    """(per_device_train_batch_size, gradient_accumulation_steps), transformers' defaults (8, 1) where unset."""
    return values.get("per_device_train_batch_size", 8), values.get("gradient_accumulation_steps", 1)


def global_batch(values: Mapping[str, Any], world_size: int) -> int | None:
    """Sequences per optimizer step: micro-batch x accumulation x ranks; None when a size is not a whole number."""
    per_device, accumulation = batch_sizes(values)
    if type(per_device) is not int or type(accumulation) is not int:
        return None
    return per_device * accumulation * world_size
