"""Preflight on the config itself: keys, value types and ranges, template, then LLaMA-Factory's own parser."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ...config import RunConfig
from ..launch import own_bin_first
from ..topology import free_port
from ..values import config_problems
from . import server
from .environment import installed_gpu_packages
from .rows import FAIL, OK, SKIP, Plan, Row

# A torchrun rank's environment for the one-rank job the LLaMA-Factory check runs in.
_ONE_RANK = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0"}
_PRECISION_FLAGS = ("bf16", "fp16", "pure_bf16")
CHILD_TIMEOUT_S = 600


def range_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(found, fix) for values LLaMA-Factory takes but that fail or mislead once the ranks run.

    Numbers out of range or not finite (train/values.py holds the ranges), an output_dir that names no
    directory, a tokenized_path that is a file (LLaMA-Factory loads it as a saved dataset).
    """
    problems = config_problems(values)
    problem = RunConfig(Path("."), (), values).output_dir_problem()
    if problem:
        problems.append((problem, "set output_dir to the run's directory, e.g. saves/my-run"))
    tokenized = values.get("tokenized_path")
    if isinstance(tokenized, str) and tokenized and Path(tokenized).is_file():
        found = f"tokenized_path: {tokenized} is a file, not a saved dataset directory"
        problems.append((found, "point it at a directory, or remove the key to let the launcher build it"))
    return problems


def _rows(check: str, problems: list[tuple[str, str]], where: str, passed: str) -> list[Row]:
    if not problems:
        return [Row(check, OK, passed)]
    return [Row(check, FAIL, found, fix, where) for found, fix in problems]


def check_config(plan: Plan) -> list[Row]:
    """Keys, types, ranges and template first; LLaMA-Factory's full parse only once those pass.

    Everything that needs LLaMA-Factory runs in one child process (child.py), so the launcher itself
    never imports the stack.
    """
    values, where = plan.cfg.values, plan.where
    deepspeed = values.get("deepspeed")
    ranges = range_problems(values)
    runnable = not ranges and not (deepspeed and not Path(str(deepspeed)).is_file())
    parse, adjusted = child_values(plan) if runnable else (None, [])
    from .environment import world_size

    job = {"world_size": world_size(plan), **{key: bool(values.get(key)) for key in ("bf16", "fp16")}}
    request = {"values": values, "parse": parse, "deepspeed": deepspeed if runnable else None, "job": job}
    result = _ask_child(plan, {**request, "imports": installed_gpu_packages(values)})
    if isinstance(result, Row):  # the child crashed or hung: only our own range checks have a verdict
        skipped = "not run: LLaMA-Factory's check did not answer (see llamafactory)"
        return [
            Row("keys", SKIP, skipped),
            *_rows("values", ranges, where, "ranges ok; types not checked"),
            Row("template", SKIP, skipped),
            result,
            Row("deepspeed schema", SKIP, skipped),
        ]
    plan.child.update(result)
    rows = _rows("keys", result["keys"], where, f"{len(values)} keys, all LLaMA-Factory's")
    rows += _rows("values", result["types"] + ranges, where, "types and ranges ok")
    template = values.get("template")
    if template is not None and template not in result["templates"]:
        import difflib

        close = difflib.get_close_matches(str(template), result["templates"], n=1)
        fix = f"did you mean '{close[0]}'?" if close else "use qwen (ARPO) or qwen_mask_results"
        rows.append(Row("template", FAIL, f"template '{template}' is not a known template", fix, where))
    else:
        rows.append(
            Row("template", OK, f"{template} (known)" if template else "none: taken from the tokenizer")
        )
    if not result["parsed"]:
        skipped = "not run: fix the other failing rows first"
        return rows + [Row("llamafactory", SKIP, skipped), Row("deepspeed schema", SKIP, skipped)]
    return rows + _parser_rows(result, adjusted, deepspeed, where)


def _installed(name: str) -> bool:
    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


def child_values(plan: Plan) -> tuple[dict[str, Any], list[str]]:
    """The values LLaMA-Factory will see at launch, less what other rows judge on this machine; and what was set."""
    from ...checkpoint.resume import plan_resume

    values = dict(plan.cfg.values)
    adjusted = []
    if not plan.gpus or plan.declared:
        for key in _PRECISION_FLAGS:
            if values.get(key):
                values[key] = False
                adjusted.append(f"{key} off (no GPU here: see gpus)")
    if values.get("enable_liger_kernel") and not _installed("liger-kernel"):
        values["enable_liger_kernel"] = False
        adjusted.append("enable_liger_kernel off (see versions)")
    # Resume, fresh start or refusal is the resume row's to say; here LLaMA-Factory gets the checkpoint the
    # launcher will pass and skips its own look at output_dir.
    if not plan.fresh and "resume_from_checkpoint" not in values and not values.get("overwrite_output_dir"):
        resume = plan_resume(plan.cfg.output_dir).resume_from
        if resume is not None:
            values["resume_from_checkpoint"] = str(resume)
    values["overwrite_output_dir"] = True
    return values, adjusted


def _ask_child(plan: Plan, request: dict[str, Any]) -> dict[str, Any] | Row:
    """Ask train/preflight/child.py as one torchrun rank would; its result, or the row saying it failed.

    Where no GPU is visible the child serves every preflight of this process, each in a fork (server.py).
    """
    from .environment import detect_gpus

    env = {
        **own_bin_first(plan.env),
        **_ONE_RANK,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    try:
        return server.ask(env, request, CHILD_TIMEOUT_S, fork=not detect_gpus())
    except server.NoAnswer as err:
        fix = "run `arpo-sft preflight` again; report it if it persists"
        return Row("llamafactory", FAIL, str(err), fix if "did not answer" in str(err) else "report it")


def _parser_rows(result: dict[str, Any], adjusted: list[str], deepspeed: Any, where: str) -> list[Row]:
    """The rows of LLaMA-Factory's parser and DeepSpeed's schema from the child's result."""
    note = f" ({'; '.join(adjusted)})" if adjusted else ""
    problem = result["llamafactory"]
    if problem:
        found = f"LLaMA-Factory refuses it: {problem.removeprefix('ValueError: ').rstrip('.')}"
        rows = [Row("llamafactory", FAIL, found, "change the setting it names", where)]
    else:
        rows = [Row("llamafactory", OK, f"get_train_args accepts it{note}")]
    if not deepspeed:
        return rows + [Row("deepspeed schema", SKIP, "no deepspeed config")]
    fix = "use one of examples/deepspeed/*.json as a base"
    return rows + (
        [Row("deepspeed schema", FAIL, found, fix, str(deepspeed)) for found in result["deepspeed"]]
        or [Row("deepspeed schema", OK, "zero_optimization valid for DeepSpeedZeroConfig")]
    )
