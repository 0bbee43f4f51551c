"""The part of preflight that needs LLaMA-Factory: its keys, types and templates, its parser, DeepSpeed's schema.

`get_train_args` sets up devices while it builds TrainingArguments (a CUDA context on GPU 0, and under
DeepSpeed a process group); in the launcher that would stay alive for the whole run. So the parent starts
this module with the environment of a one-rank torchrun job, reads one result line, and the process ends.
The key, type and template checks run here too, so that the launcher never imports the stack itself:
importing it once costs seconds of CPU, and this process pays that anyway.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

RESULT_MARK = "ARPO_PREFLIGHT_RESULT "
# The module whose import loads each GPU package's compiled part: flash-attn's CUDA extension
# (flash_attn_2_cuda, imported by its interface module) and the Liger patches LLaMA-Factory applies. A wheel
# built against another torch passes a metadata check and fails here, instead of at model load on every rank.
GPU_MODULES = {"flash-attn": "flash_attn.flash_attn_interface", "liger-kernel": "liger_kernel.transformers"}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def llamafactory_problem(values: dict[str, Any]) -> str | None:
    """What LLaMA-Factory refuses in `values` (its own message), or None when it accepts them."""
    from ...lf.args import parse_train_args

    try:
        parse_train_args(values)
    except Exception as err:  # noqa: BLE001  (whatever it raises is its refusal; report it, do not crash)
        return _first_line(err)
    return None


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


def main() -> None:
    """Read {"values", "parse": values or null, "deepspeed": path or null, "imports": [package, ...]} on
    stdin; print one result line.

    Keys and types are judged on `values` as written; `parse` (the values as the launch will pass them)
    goes through LLaMA-Factory's parser and `deepspeed` through DeepSpeed's schema only when the parent
    sent them and no key, type or template is wrong.
    """
    import torch

    from ...lf import args

    request = json.loads(sys.stdin.read())
    values = request["values"]
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "imports": import_problems(request.get("imports", [])),
        "keys": args.unknown_key_problems(values),
        "types": args.type_problems(values),
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
        result["llamafactory"] = llamafactory_problem(request["parse"])
        result["parsed"] = True
        if request.get("deepspeed"):
            result["deepspeed"] = deepspeed_problems(Path(request["deepspeed"]))
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
