"""The part of preflight that needs LLaMA-Factory: its keys, types and templates, its parser, DeepSpeed's schema.

`get_train_args` sets up devices while it builds TrainingArguments (a CUDA context on GPU 0, and under
DeepSpeed a process group); in the launcher that would stay alive for the whole run. So the parent starts
this module with the environment of a one-rank torchrun job and reads one result line per request; each
request is answered in a fresh process (server.py says how).
The key, type and template checks run here too, so that the launcher never imports the stack itself:
importing it once costs seconds of CPU, and this process pays that anyway.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

# The module whose import loads each GPU package's compiled part: flash-attn's CUDA extension
# (flash_attn_2_cuda, imported by its interface module) and the Liger patches LLaMA-Factory applies. A wheel
# built against another torch passes a metadata check and fails here, instead of at model load on every rank.
GPU_MODULES = {"flash-attn": "flash_attn.flash_attn_interface", "liger-kernel": "liger_kernel.transformers"}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def llamafactory_problem(values: dict[str, Any]) -> tuple[str | None, Any]:
    """What LLaMA-Factory refuses in `values` (its own message) or None; and its TrainingArguments if any."""
    from ...lf.args import parse_train_args

    try:
        return None, parse_train_args(values)
    except Exception as err:  # noqa: BLE001  (whatever it raises is its refusal; report it, do not crash)
        return _first_line(err), None


class _JobArgs:
    """The TrainingArguments as the launched job will have them: its world size, the config's precision.

    The child is one rank with precision switched off where no GPU is (arguments.child_values), so both
    are put back before transformers fills and compares the DeepSpeed config.
    """

    def __init__(self, args: Any, world_size: int, precision: dict[str, bool]) -> None:
        self._args, self.world_size = args, world_size
        self.bf16, self.fp16 = precision.get("bf16", False), precision.get("fp16", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._args, name)


def deepspeed_mismatches(path: Path, args: Any, world_size: int, precision: dict[str, bool]) -> list[str]:
    """What the DeepSpeed JSON contradicts in the config, by transformers' own fill-and-compare.

    `HfTrainerDeepSpeedConfig.trainer_config_process` fills every "auto" from TrainingArguments and lists
    each value that differs (micro-batch, accumulation, global batch, clipping, optimizer, precision);
    transformers raises on that list only once the model is built on every rank.
    """
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    try:
        config = HfTrainerDeepSpeedConfig(str(path))
        config.trainer_config_process(_JobArgs(args, world_size, precision))
    except (ValueError, TypeError, AttributeError) as err:  # its own reading of a malformed JSON
        return [f"{path}: {_first_line(err)}"]
    finally:
        unset_hf_deepspeed_config()
    return [
        f"{line.removeprefix('- ')} (DeepSpeed's value against the config's); set it to \"auto\" or match them"
        for line in config.mismatches
    ]


def deepspeed_problems(path: Path) -> list[str]:
    """The `zero_optimization` section checked by DeepSpeed's own config class ("auto" is filled in later)."""
    import pydantic
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"{path}: {_first_line(err)}"]
    zero = config.get("zero_optimization", {})
    try:
        DeepSpeedZeroConfig(**{key: value for key, value in zero.items() if value != "auto"})
    except pydantic.ValidationError as err:
        return [
            f"zero_optimization.{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in err.errors()
        ]
    except TypeError as err:
        return [f"zero_optimization: {_first_line(err)}"]
    return []


def report_to_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(found, fix) for a `report_to` backend transformers does not know: it raises only when the Trainer starts."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    value = values.get("report_to")
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    known = ["none", "all", *INTEGRATION_TO_CALLBACK]
    fix = f"use one of: {', '.join(known)}"
    return [
        (f"report_to: {name!r} is not a logging backend transformers knows", fix)
        for name in names
        if name not in known
    ]


def import_problems(packages: list[str]) -> dict[str, str | None]:
    """For each GPU package, the first line of what importing its compiled part raised, or None."""
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            importlib.import_module(GPU_MODULES[package])
        except Exception as err:  # noqa: BLE001  (an ImportError, OSError or a CUDA error: each is the answer)
            found[package] = _first_line(err)
        else:
            found[package] = None
    return found


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to {"values", "parse": values or null, "deepspeed": path or null, "imports": [package, ...]}.

    Keys and types are judged on `values` as written; `parse` (the values as the launch will pass them)
    goes through LLaMA-Factory's parser and `deepspeed` through DeepSpeed's schema only when the parent
    sent them and no key, type or template is wrong.
    """
    import torch

    from ...lf import args

    values = request["values"]
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "imports": import_problems(request.get("imports", [])),
        "keys": args.unknown_key_problems(values),
        "types": args.type_problems(values) + report_to_problems(values),
        "templates": sorted(args.template_names()),
        "llamafactory": None,
        "deepspeed": [],
        "parsed": False,
    }
    template = values.get("template")
    valid = (
        not result["keys"] and not result["types"] and (template is None or template in result["templates"])
    )
    if valid and request.get("parse") is not None:
        result["llamafactory"], parsed = llamafactory_problem(request["parse"])
        result["parsed"] = True
        if request.get("deepspeed"):
            path = Path(request["deepspeed"])
            result["deepspeed"] = deepspeed_problems(path)
            if parsed is not None and not result["deepspeed"]:
                job = request.get("job", {})
                result["deepspeed"] = deepspeed_mismatches(path, parsed, job.get("world_size", 1), job)
    return result


def _import_the_stack() -> None:
    """What every answer imports, loaded once before the first fork."""
    import deepspeed  # noqa: F401
    import pydantic  # noqa: F401
    import torch  # noqa: F401
    from transformers.integrations import deepspeed as hf_deepspeed  # noqa: F401

    from ...lf import args

    args.template_names()


def main() -> None:
    """`--serve`: answer request lines until EOF, each in a fork; else answer the one request on stdin."""
    from . import server

    if server.SERVE_FLAG in sys.argv[1:]:
        server.serve(answer, _import_the_stack)
    else:
        server.answer_once(answer)


if __name__ == "__main__":
    main()
