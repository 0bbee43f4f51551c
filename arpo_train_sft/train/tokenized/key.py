"""What a tokenized dataset depends on, as named values: hashed into the cache key, diffed into a reason.

Every input is a `name -> value` pair: the data-related config values as written, a content hash of each
data file and of the tokenizer's files, the source of the plugin's template code when the run uses it,
and the versions of the packages that tokenize. Two launches with equal inputs get the same key, on any
node; the first input that differs names the reason for a rebuild.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ...config import RunConfig
from ...secrets import is_secret_key

# Config keys passed to the build that cannot change its output (how many processes tokenize). Secrets are
# left out too (secrets.is_secret_key): the inputs are written to the entry's manifest.
NOT_IN_KEY = ("preprocessing_num_workers", "do_eval")
# The files `AutoTokenizer.from_pretrained` reads; config.json picks the tokenizer class.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "config.json",
)
# The packages whose code decides the tokenized rows.
PACKAGES = ("llamafactory", "arpo-train-sft", "transformers", "tokenizers", "datasets", "tiktoken")
# Our template's registration: its labels come from this code, which no package version tracks.
_OWN_TEMPLATE = "qwen_mask_results"
_TEMPLATE_SOURCES = ("lf/masking.py", "arpo/tags.py")
# The build's tiktoken path for `encode` (exact by its checks, but code no package version tracks).
_ENCODER_SOURCES = ("lf/fastbpe.py",)
_HUB_SOURCES = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]

DATA_FILE = "data file "
TOKENIZER = "tokenizer files"
TEMPLATE_CODE = f"{_OWN_TEMPLATE} code"
ENCODER_CODE = "fast encoder code"
DATASET_ENTRY = "dataset_info entry "


def file_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the names and bytes of `paths`, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def build_args(cfg: RunConfig, names: set[str]) -> dict[str, Any]:
    """The config values the build passes to LLaMA-Factory's parser (`names`: lf.tokenize.data_arg_names)."""
    return {key: value for key, value in cfg.values.items() if key in names}


def key_inputs(cfg: RunConfig, args: dict[str, Any]) -> dict[str, Any]:
    """Every input of the tokenized dataset, by name."""
    inputs: dict[str, Any] = {
        key: value for key, value in args.items() if key not in NOT_IN_KEY and not is_secret_key(key)
    }
    inputs.update(_dataset_inputs(cfg))
    inputs[TOKENIZER] = file_digest(_tokenizer_files(cfg))
    if cfg.values.get("template") == _OWN_TEMPLATE:
        inputs[TEMPLATE_CODE] = file_digest(_PACKAGE_ROOT / name for name in _TEMPLATE_SOURCES)
    inputs[ENCODER_CODE] = file_digest(_PACKAGE_ROOT / name for name in _ENCODER_SOURCES)
    for package in PACKAGES:
        inputs[package] = _version(package)
    return inputs


def cache_key(inputs: dict[str, Any]) -> str:
    """A short stable hash of `inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:20]


def change_reason(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two sets of inputs, in words (`cutoff_len 15000 -> 512`)."""
    changes = []
    for name in sorted(set(old) | set(new), key=lambda n: (_is_hashed(n), n.startswith(DATA_FILE), n)):
        before, after = old.get(name, "unset"), new.get(name, "unset")
        if before == after:
            continue
        if _is_hashed(name):
            if "unset" in (before, after):
                continue  # follows from a config change named above (another dataset, another template)
            changes.append(
                f"data file content changed ({name.removeprefix(DATA_FILE)})"
                if name.startswith(DATA_FILE)
                else f"{name} changed"
            )
        else:
            changes.append(f"{name} {_show(before)} -> {_show(after)}")
    return ", ".join(changes) or "same inputs"


def _is_hashed(name: str) -> bool:
    return name.startswith((DATA_FILE, DATASET_ENTRY)) or name in (TOKENIZER, TEMPLATE_CODE, ENCODER_CODE)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _dataset_inputs(cfg: RunConfig) -> dict[str, Any]:
    dataset_dir = Path(str(cfg.values.get("dataset_dir", "data")))
    registry = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))
    inputs: dict[str, Any] = {}
    for key in ("dataset", "eval_dataset"):
        for name in (n.strip() for n in str(cfg.values.get(key) or "").split(",") if n.strip()):
            entry = registry.get(name, {})
            inputs[DATASET_ENTRY + name] = json.dumps(entry, sort_keys=True)
            if any(source in entry for source in _HUB_SOURCES) or "file_name" not in entry:
                continue  # remote data: only its entry (url, revision) can be keyed
            local = dataset_dir / entry["file_name"]
            files = sorted(local.iterdir()) if local.is_dir() else [local]
            inputs[DATA_FILE + str(local)] = file_digest(files)
    return inputs


def _tokenizer_files(cfg: RunConfig) -> list[Path]:
    model = str(cfg.values.get("model_name_or_path", ""))
    folder = Path(model)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        revision = str(cfg.values.get("model_revision", "main"))
        folder = Path(snapshot_download(model, revision=revision, allow_patterns=list(TOKENIZER_FILES)))
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
