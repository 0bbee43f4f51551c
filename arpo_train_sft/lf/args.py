"""Training arguments as LLaMA-Factory's own parser defines them: keys, value types, templates, validation."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from typing import Any

from llamafactory.extras.constants import CHECKPOINT_NAMES
from llamafactory.hparams.parser import _TRAIN_ARGS

from ..secrets import is_secret_key


def training_keys() -> set[str]:
    """Every key LLaMA-Factory's training parser accepts, read from its own dataclasses."""
    return {field.name for cls in _TRAIN_ARGS for field in dataclasses.fields(cls)}


def _field_types() -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for cls in _TRAIN_ARGS:
        hints.update(typing.get_type_hints(cls))
    return hints


def unknown_key_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(found, fix) for every key LLaMA-Factory does not know, with the closest known spelling."""
    known = training_keys()
    problems = []
    for key in values:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        fix = f"did you mean '{close[0]}'?" if close else "remove it or check LLaMA-Factory's argument list"
        problems.append((f"unknown key '{key}'", fix))
    return problems


def _accepts(kind: Any, value: Any) -> bool | None:
    """Whether `value` fits the declared type; None where the type is one we do not judge (dicts, paths)."""
    if kind is Any:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        enums = [arg for arg in typing.get_args(kind) if isinstance(arg, type) and issubclass(arg, enum.Enum)]
        if enums and isinstance(value, str):  # `SchedulerType | str`: the string must name a member
            return any(_accepts(arg, value) for arg in enums)
        verdicts = [_accepts(arg, value) for arg in typing.get_args(kind)]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return value in typing.get_args(kind)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return value in {member.value for member in kind} or isinstance(value, kind)
    if origin is list:
        return isinstance(value, list) or None
    return None


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        enums = [arg for arg in typing.get_args(kind) if isinstance(arg, type) and issubclass(arg, enum.Enum)]
        kinds = enums or [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return " or ".join(_describe(arg) for arg in kinds)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(kind))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in kind)
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        kind, str(kind)
    )


def type_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(found, fix) for every value of the wrong type, judged by the type LLaMA-Factory declares for it."""
    hints = _field_types()
    problems = []
    for key, value in values.items():
        if key in hints and _accepts(hints[key], value) is False:
            # A token's value is never formatted, even masked later: name its type instead.
            shown = f"a {type(value).__name__}" if is_secret_key(key) else repr(value)
            problems.append(
                (f"{key}: {shown} is not {_describe(hints[key])}", f"set {key} to {_describe(hints[key])}")
            )
    return problems


def template_names() -> set[str]:
    """Every chat template LLaMA-Factory knows, ours included."""
    from llamafactory.data.template import TEMPLATES

    from . import masking  # noqa: F401  (registers qwen_mask_results)

    return set(TEMPLATES)


def final_model_files() -> set[str]:
    """The files whose presence in output_dir (without checkpoint-*) makes LLaMA-Factory refuse to start."""
    return set(CHECKPOINT_NAMES)


def parse_train_args(values: dict[str, Any]) -> Any:
    """Run LLaMA-Factory's `get_train_args` on `values`: every dataclass post-init and every cross-check.

    It sets up devices and, under DeepSpeed, a process group, so call it only in a throwaway process that
    looks like one torchrun rank (train/preflight/child.py). It loads no model and writes no file.
    Returns the TrainingArguments; raises what LLaMA-Factory raises.
    """
    from llamafactory.hparams.parser import get_train_args

    return get_train_args(dict(values))[2]
