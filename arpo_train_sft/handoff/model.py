"""The parts of a model dir the hand-off checks read: configs, the tokenizer as RL loads it, and as training did."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arpo.recipe import ARPO_TEMPLATE
from ..errors import UserError

FIX_EXPORT = (
    "pass a model dir written by `arpo-sft export` (config.json, tokenizer files, generation_config.json)"
)


@dataclass(frozen=True)
class ModelDir:
    """A model dir as the RL stage will load it."""

    path: Path
    config: dict[str, Any]
    generation: dict[str, Any] | None  # generation_config.json, when there is one
    tokenizer: Any  # as verl and vLLM load it: AutoTokenizer, nothing changed
    train_tokenizer: Any  # a second copy, changed by LLaMA-Factory's template as training changed it
    template: Any  # LLaMA-Factory's `qwen`, ARPO's training template


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object file, or one line naming it and the fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; fix: {fix}") from None
    except (OSError, ValueError, RecursionError) as err:
        reason = " ".join(str(err).split())[:200]
        raise UserError(f"{path}: cannot be read as JSON ({reason}); fix: {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a JSON {type(data).__name__}, not an object; fix: {fix}")
    return data


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    fix = f"copy the base model's tokenizer files (tokenizer.json, tokenizer_config.json) into {path}"
    if not (path / "tokenizer_config.json").is_file():
        raise UserError(f"{path / 'tokenizer_config.json'}: missing; fix: {fix}")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        reason = " ".join(str(err).split())[:200]
        raise UserError(f"{path}: the tokenizer cannot be loaded ({reason}); fix: {fix}") from None


def load_model_dir(path: Path) -> ModelDir:
    """Read path's configs and tokenizer; UserError (one line each) when it is not a loadable model dir."""
    from ..data.tokens import load_template

    if not path.is_dir():
        raise UserError(f"{path}: not a directory; fix: {FIX_EXPORT}")
    config = read_json(path / "config.json", FIX_EXPORT)
    generation = None
    if (path / "generation_config.json").exists():
        generation = read_json(
            path / "generation_config.json", "export again, or delete it to use config.json's"
        )
    tokenizer = _tokenizer(path)
    train_tokenizer = copy.deepcopy(tokenizer)  # the template replaces its eos token; RL's stays as saved
    return ModelDir(
        path, config, generation, tokenizer, train_tokenizer, load_template(train_tokenizer, ARPO_TEMPLATE)
    )
