"""Secrets (hub tokens, API keys) never reach a file we or the trainer write: one set of values, one redact."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MASK = "***"
# Config keys that hold a credential: LLaMA-Factory's hf/ms/om_hub_token, the Trainer's hub_token, and any
# *api_key*/*password*/*secret*. Deliberately not every "*token*": max_new_tokens, add_special_tokens are not.
_SECRET_KEY = re.compile(r"(^|_)token$|api_key|password|secret", re.IGNORECASE)
# Environment variables read the same way: HF_TOKEN, HUGGING_FACE_HUB_TOKEN, WANDB_API_KEY, ...
# (not where one is kept: HF_TOKEN_PATH names a file, and masking paths would garble every log).
_SECRET_ENV = re.compile(r"^(?!.*_(PATH|FILE|DIR)$).*(TOKEN|API_KEY|PASSWORD|SECRET)", re.IGNORECASE)
# Shorter values are not credentials (e.g. `HF_HUB_DISABLE_TOKEN=1`) and would mask every digit in a log.
_MIN_LEN = 8
# Where a token override goes instead of the ranks' argv: the variable each hub client reads itself.
_ENV_FOR_KEY = {"ms_hub_token": "MODELSCOPE_API_TOKEN", "om_hub_token": "MODELERS_HUB_TOKEN"}
_HF_ENV = "HF_TOKEN"
# Where a parent puts the secret arguments of a child that takes them as arguments (the tokenized build):
# the environment, never a file. JSON, so a list or a number arrives as it was given.
SECRET_ARGS_ENV = "ARPO_SFT_SECRET_ARGS"

# Values met in this process's configs (a `hub_token=` override, a YAML key) on top of the environment's.
_from_configs: set[str] = set()


def is_secret_key(key: str) -> bool:
    """Whether a config key or override holds a credential."""
    return bool(_SECRET_KEY.search(key))


def hf_token_path(env: Mapping[str, str]) -> Path:
    """huggingface_hub's token file (HF_TOKEN_PATH, else $HF_HOME/token), computed without importing it."""
    if env.get("HF_TOKEN_PATH"):
        return Path(env["HF_TOKEN_PATH"]).expanduser()
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(env.get("HF_HOME") or cache / "huggingface").expanduser() / "token"


def secret_values(env: Mapping[str, str] | None = None) -> set[str]:
    """Every secret value known here: secret-named env variables, the HF token file, configs seen so far."""
    env = os.environ if env is None else env
    found = {value for name, value in env.items() if _SECRET_ENV.search(name)}
    with contextlib.suppress(OSError):
        found.add(hf_token_path(env).read_text(encoding="utf-8", errors="replace").strip())
    spelled = {form for value in found for form in spellings(value)} | _from_configs
    return {value for value in spelled if len(value) >= _MIN_LEN}


def spellings(value: Any) -> set[str]:
    """Every way a secret value can show up in text: each string or number inside it, as is and escaped.

    A token of the wrong type is echoed by error lines (`['hf_a', 'hf_b'] is not a string`) and dumped
    into JSON, so a list masks each element, a mapping each value, a number its digits.
    """
    if isinstance(value, Mapping):
        return {form for item in value.values() for form in spellings(item)}
    if isinstance(value, (list, tuple, set, frozenset)):
        return {form for item in value for form in spellings(item)}
    if value is None or isinstance(value, bool):
        return set()
    if isinstance(value, str):
        return {value, json.dumps(value)[1:-1], repr(value)[1:-1]} - {""}
    return {str(value), repr(value), json.dumps(value, default=str)}


def remember(values: Mapping[str, Any]) -> None:
    """Add the secret-keyed values of a loaded config so every later `redact` masks them too."""
    for key, value in values.items():
        if is_secret_key(str(key)):
            _from_configs.update(spellings(value))


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every known secret value replaced by ***; longest first, so no part of one survives."""
    for value in sorted(secret_values() if secrets is None else secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def move_to_env(
    values: Mapping[str, Any], overrides: tuple[str, ...]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Overrides for the ranks with every secret key set to null, and the environment that carries them.

    The Trainer pickles its arguments (training_args.bin) and LLaMA-Factory logs them, so a token on the
    argv or in the YAML would land in output_dir. Hub clients read HF_TOKEN / MODELSCOPE_API_TOKEN
    themselves, so the ranks get the value there and `key=null` on the argv (which also beats the YAML).
    """
    remember(values)
    kept = tuple(item for item in overrides if not is_secret_key(item.split("=", 1)[0]))
    env: dict[str, str] = {}
    nulled: list[str] = []
    for key, value in values.items():
        if is_secret_key(key) and value is not None:
            nulled.append(f"{key}=null")
            if isinstance(value, str) and value:
                env[_ENV_FOR_KEY.get(key, _HF_ENV if key.endswith("token") else key.upper())] = value
    return kept + tuple(nulled), env


def split_secret_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`args` without its secret keys, and the environment that hands those to a child instead of a file."""
    remember(args)
    secret = {key: value for key, value in args.items() if is_secret_key(key) and value is not None}
    plain = {key: value for key, value in args.items() if not is_secret_key(key)}
    return plain, ({SECRET_ARGS_ENV: json.dumps(secret, default=str)} if secret else {})


def secret_args(env: Mapping[str, str]) -> dict[str, Any]:
    """The secret arguments a parent handed over in the environment (`split_secret_args`)."""
    try:
        value = json.loads(env.get(SECRET_ARGS_ENV) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
