"""`arpo-sft verify`: run a model through ARPO's tool loop on a few questions and report format and answers."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from ..atomic import check_outputs
from ..checkpoint.export import read_config
from ..errors import EXIT_DATA, UserError
from .batch import Engine, run_prompts, verify_prompt
from .loop import RESULT_FORMATS, Limits
from .prompts import DEFAULT_PROMPTS, MAX_PROMPTS_BYTES, Prompt, read_prompt_rows, read_prompts
from .report import print_report, summarize, write_json
from .runs import draw, hf_checkpoint, is_run, plot_path, select_checkpoints, verify_run
from .sandbox import WEAK_FLAG, isolation_problem, run_python
from .search import LocalCorpusSearch

# Re-exported: tests and other commands import them from here.
__all__ = ["DEFAULT_PROMPTS", "MAX_PROMPTS_BYTES", "Prompt", "read_prompts", "verify_prompt"]


def check_model_dir(path: Path) -> None:
    """Fail in one line per problem when `path` is not a loadable Hugging Face model with its tokenizer."""
    export = "export the checkpoint with `arpo-sft export`"
    if not path.is_dir():
        raise UserError(f"{path}: no such directory; pass a Hugging Face model directory")
    problems = []
    if not (path / "config.json").is_file():
        problems.append(f"{path}: no config.json; {export}")
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        problems.append(f"{path}: no model weights (*.safetensors); {export}")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        problems.append(
            f"{path}: no tokenizer files; copy the tokenizer files from the base model, or {export}"
        )
    if not problems:  # a config transformers cannot read would fail the load as a bug: say which key, now
        try:
            read_config(path)
        except UserError as err:
            problems += err.problems
    if problems:
        raise UserError(problems)


def _engine_kind(requested: str | None) -> str:
    """--engine as asked; by default vLLM where it is installed and a GPU is present, else transformers."""
    from .vllm_engine import require_vllm, vllm_available

    if requested == "vllm":
        require_vllm()
    return requested or ("vllm" if vllm_available() else "hf")


@contextlib.contextmanager
def _model_engine(kind: str, path: Path) -> Iterator[Engine]:
    if kind == "vllm":
        from .vllm_engine import VLLMEngine

        engine = VLLMEngine(path)
        try:
            yield engine
        finally:
            engine.close()
    else:
        from .engine import load_model_dir

        yield load_model_dir(path)


def _read_prompts(path: str | None) -> tuple[list[Prompt], list[str]]:
    """The prompts, with each bad row on stderr and left out; no good row at all is an error."""
    if not path:
        return list(DEFAULT_PROMPTS), []
    prompts, problems = read_prompt_rows(Path(path))
    if not prompts:
        raise UserError(problems)
    for problem in problems:
        print(f"arpo-sft: skipped {problem}", file=sys.stderr)
    return prompts, problems


def _step_line(entry: dict) -> str:
    if "skipped" in entry:
        return entry["skipped"]
    accuracy = f", accuracy {entry['accuracy']:.0%}" if "accuracy" in entry else ""
    return (
        f"step {entry['step']}: format {entry['format_compliance']:.0%}, self-written <result> "
        f"{entry['self_written_result_rate']:.0%}, stopped at a tool {entry['stopped_at_tool_rate']:.0%}, "
        f"{entry['tool_calls_per_prompt']:.2f} tool calls per prompt{accuracy}"
    )


def run(args: argparse.Namespace) -> int:
    """Verify MODEL (or every checkpoint of RUN_DIR) on the prompts and print (and optionally save) the report."""
    if min(args.max_new_tokens, args.max_total_tokens, args.time_limit) <= 0:
        raise UserError("--max-new-tokens, --max-total-tokens and --time-limit must be > 0")
    if min(args.max_python_calls, args.max_search_calls) < 0:
        raise UserError("--max-python-calls and --max-search-calls must be >= 0 (0 refuses every call)")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1 (1 generates one prompt at a time)")
    target = Path(args.model)
    checkpoints = None
    if target.is_dir() and (is_run(target) or not (target / "config.json").is_file()):
        checkpoints = select_checkpoints(target, args.steps)  # one line when it holds no checkpoint either
        read = [target, *checkpoints]
    elif args.steps:
        raise UserError(f"--steps: {target} holds no checkpoint-N/ folders; --steps needs a run's output_dir")
    else:
        check_model_dir(target)
        read = [target]
    outputs = {}
    if args.report:  # before any model loads: never over the prompts, the corpus or a file of the model
        outputs["--report"] = Path(args.report)
        if checkpoints is not None:
            outputs["the plot"] = plot_path(Path(args.report))
        label = "MODEL" if checkpoints is None else "RUN_DIR"
        inputs = {
            f"{label}'s {p.relative_to(target)}": p for d in read for p in sorted(d.iterdir()) if p.is_file()
        }
        inputs |= {flag: Path(v) for flag, v in (("--prompts", args.prompts), ("--corpus", args.corpus)) if v}
        check_outputs(inputs, outputs)
    prompts, bad_rows = _read_prompts(args.prompts)
    search = LocalCorpusSearch.from_file(Path(args.corpus)) if args.corpus else LocalCorpusSearch.demo()
    limits = Limits(
        max_python_calls=args.max_python_calls,
        max_search_calls=args.max_search_calls,
        max_new_tokens=args.max_new_tokens,
        max_total_tokens=args.max_total_tokens,
        time_limit_s=args.time_limit,
        allow_weak_sandbox=args.allow_weak_sandbox,
    )
    result_format = RESULT_FORMATS[args.result_format]
    kind = _engine_kind(args.engine)
    probe = run_python("print(1 + 1)", allow_weak=args.allow_weak_sandbox)  # refuses where it cannot isolate
    if probe.mode == "weak":
        print(f"arpo-sft: warning: weak python sandbox ({isolation_problem()}), as {WEAK_FLAG} allows")
    if probe.stdout != "2\n":  # every <python> result would be this failure: say so once, up front
        why = (probe.tool_output() or f"exit status {probe.exit_code}").splitlines()[-1]
        raise UserError(f"the python sandbox cannot run code on this host: {why}")

    def evaluate(engine: Engine):
        size = args.batch_size or engine.default_batch_size(limits)
        print(f"generating {len(prompts)} prompts with {engine.name}, {size} a batch", flush=True)
        start = time.monotonic()
        reports = run_prompts(engine, prompts, search, limits, result_format, size)
        print(f"generated in {time.monotonic() - start:.1f} s", flush=True)
        return reports

    settings = {**asdict(limits), "result_format": asdict(result_format)}  # the exact bytes appended
    settings |= {"sandbox_mode": probe.mode, "corpus": args.corpus or "demo", "engine": kind}
    settings |= {"batch_size": args.batch_size}  # null: sized to the device, as printed
    extra = {"skipped_rows": bad_rows} if bad_rows else {}
    if checkpoints is None:
        with _model_engine(kind, target) as engine:
            reports = evaluate(engine)
        summary = summarize(reports)
        print_report(target, reports, summary)
        data = {
            "model": str(target),
            "settings": settings,
            "summary": summary,
            "prompts": [asdict(r) for r in reports],
        }
        failed = False
    else:
        opener = hf_checkpoint
        if kind == "vllm":
            from .vllm_engine import vllm_for_checkpoint as opener
        entries = verify_run(checkpoints, opener, evaluate)
        for entry in entries:
            print(_step_line(entry))
        data = {"run": str(target), "settings": settings, "steps": entries}
        failed = any("skipped" in e for e in entries)
    if args.report:
        write_json(Path(args.report), data | extra)
        print(f"report written to {args.report}")
        if checkpoints is not None and not all("skipped" in e for e in data["steps"]):
            draw(data["steps"], f"arpo-sft verify {target}", outputs["the plot"])
            print(f"plot written to {outputs['the plot']}")
    # Exit 1 once the rest has run, as the data commands do for rows to fix: 2 says nothing was started.
    return EXIT_DATA if failed or bad_rows else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `verify` to the `arpo-sft` command tree."""
    p = subparsers.add_parser(
        "verify",
        help="run a model, or every checkpoint of a run, through ARPO's tool loop; report format and answers",
        description="Generate greedily with MODEL's own chat template and ARPO's system prompt, as ARPO's\n"
        "inference does: each <python> call runs in a sandbox (see `arpo-sft sandbox run --help`; no\n"
        "network, no host files), each <search> call against a local corpus, and its <result>\n"
        "is appended inline before generation continues. Reports per prompt: format compliance (ARPO's\n"
        "tag rules), tool calls, the \\boxed{} answer, whether it matches the reference, time taken.\n"
        "Given a run's output_dir, every checkpoint-N/ (or --steps) is consolidated in memory and verified\n"
        "on the same prompts: one report entry per step, and FILE.png beside --report FILE.json.",
        epilog="examples:\n  arpo-sft verify exports/qwen2.5-7b-sft --prompts prompts.jsonl --report verify.json\n"
        "  arpo-sft verify checkpoints/qwen2.5-7b-sft --steps 2000,4000 --report steps.json --batch-size 16\n"
        'prompts.jsonl holds one {"question": "...", "answer": "42"} per line (answer optional).',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add(
        "model",
        metavar="MODEL",
        help="Hugging Face model directory (weights, config.json, tokenizer), or a run's output_dir holding "
        "checkpoint-N/ folders (RUN_DIR)",
    )
    add("--steps", metavar="N,N", help="RUN_DIR only: the checkpoints to verify (default: every one)")
    add(
        "--batch-size",
        type=int,
        metavar="N",
        help="prompts generated together (default: 16 on CPU; on CUDA from free memory; 256 with vLLM)",
    )
    add(
        "--engine",
        choices=("hf", "vllm"),
        help="generator (default: vllm where it is installed and a GPU is present, else hf = transformers)",
    )
    add("--prompts", metavar="FILE", help="JSONL of questions (default: 5 built-in demo-style questions)")
    for flag, kind, default, what in (
        ("--max-python-calls", int, Limits.max_python_calls, "python calls run per prompt; more are refused"),
        ("--max-search-calls", int, Limits.max_search_calls, "search calls run per prompt; more are refused"),
        ("--max-new-tokens", int, Limits.max_new_tokens, "tokens per generation call"),
        ("--max-total-tokens", int, Limits.max_total_tokens, "generated tokens per prompt"),
        ("--time-limit", float, Limits.time_limit_s, "seconds per prompt, tools included"),
    ):
        add(flag, type=kind, default=default, metavar="N", help=f"{what} (default: {default:g})")
    add(
        "--result-format",
        choices=tuple(RESULT_FORMATS),
        default="eval",
        help="bytes around each tool result: eval = <result>{output}</result> (ARPO's evaluation, which measured "
        "its published numbers; default), rollout = a space, then <result>\\n{output}\\n</result> (ARPO's RL)",
    )
    add("--corpus", metavar="FILE", help='search corpus: *.jsonl with a "text" field, or a passage a line')
    add(
        "--report",
        metavar="FILE.json",
        help="also write the full report, trajectories included, as JSON (RUN_DIR: and the plot, FILE.png)",
    )
    add(
        WEAK_FLAG,
        action="store_true",
        help="where the host allows no namespaces, run model code anyway with "
        "rlimits, nobody and the socket module disabled (host files readable, ctypes sockets work); without "
        "it verify exits 3 there. The report records sandbox_mode",
    )
    p.set_defaults(func=run)
