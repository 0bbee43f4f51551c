"""`arpo-sft verify`: run a model through ARPO's tool loop on a few questions and report format and answers."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..arpo.prompt import ARPO_SYSTEM_PROMPT
from ..arpo.tags import boxed_answer, format_problems
from ..atomic import check_outputs
from ..checkpoint.export import read_config
from ..errors import UserError
from .loop import RESULT_FORMATS, STOP_TAGS, Generate, Limits, ResultFormat, Step, run_loop
from .report import PromptReport, print_report, summarize, write_json
from .sandbox import WEAK_FLAG, isolation_problem, run_python
from .search import LocalCorpusSearch, SearchBackend

# prompts files are hand-made lists of questions: 16 MiB is thousands of them.
MAX_PROMPTS_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Prompt:
    question: str
    answer: str | None = None  # the reference, when known


DEFAULT_PROMPTS = (
    Prompt("What is the value of 37 * 43 - 19?", "1572"),
    Prompt("What is the greatest common divisor of 462 and 1071?", "21"),
    Prompt("What is the capital of Kenya?", "Nairobi"),
    Prompt("What is the atomic number of gold?", "79"),
    Prompt("Which river is longer, the Volga or the Danube?", "Volga"),
)


def _squash(text: str) -> str:
    return " ".join(text.split())


def verify_prompt(
    prompt: Prompt, generate: Generate, search: SearchBackend, limits: Limits, result_format: ResultFormat
) -> PromptReport:
    """Run one question through the loop and score its trajectory."""
    start = time.monotonic()
    traj = run_loop(generate, search, limits, result_format)
    problems = format_problems(traj.text)
    answer = boxed_answer(traj.text)
    correct = (
        None if prompt.answer is None else answer is not None and _squash(answer) == _squash(prompt.answer)
    )
    return PromptReport(
        prompt.question,
        prompt.answer,
        traj.text,
        problems,
        not problems,
        answer,
        correct,
        traj.calls["python"],
        traj.calls["search"],
        sum(traj.refused.values()),
        traj.repeated,
        traj.stop,
        traj.tokens,
        round(time.monotonic() - start, 3),
    )


def read_prompts(path: Path) -> list[Prompt]:
    """Prompts from JSONL lines {"question": ..., "answer": optional}; every bad line is reported.

    At most MAX_PROMPTS_BYTES are read (an endless file such as /dev/zero ends at once), and each line goes
    through the data readers' bounded decode (nesting depth, integer digits).
    """
    from ..data.bounds import decode

    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PROMPTS_BYTES + 1)
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the prompts ({err}); pass a readable UTF-8 JSONL file") from err
    if len(raw) > MAX_PROMPTS_BYTES:
        raise UserError(
            f"{path}: over {MAX_PROMPTS_BYTES // 2**20} MiB of prompts; split it into smaller files"
        )
    prompts, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row, end, limit = decode(line, len(line) - len(line.lstrip()))
            if limit is None and line[end:].strip():
                raise json.JSONDecodeError("extra data after the object", line, end)
        except (json.JSONDecodeError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
            problems.append(f"{path}:{number}: not valid JSON ({reason}); fix or delete the line")
            continue
        if limit is not None:
            problems.append(f"{path}:{number}: {limit}")
            continue
        question = row.get("question") if isinstance(row, dict) else None
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(question, str) or not question.strip():
            problems.append(
                f'{path}:{number}: needs a "question" string: {{"question": "...", "answer": "42"}}'
            )
        elif answer is not None and not isinstance(answer, (str, int, float)):
            problems.append(f'{path}:{number}: "answer" must be a string or a number, or left out')
        else:
            prompts.append(Prompt(question, None if answer is None else str(answer)))
    if not problems and not prompts:
        problems.append(f'{path}: no prompts; add one {{"question": ...}} object per line')
    if problems:
        raise UserError(problems)
    return prompts


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


def load_generator_factory(path: Path) -> Callable[[str], Generate]:
    """Load the model and tokenizer once; return question -> greedy generator on its chat-templated prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, StoppingCriteria

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.chat_template:
        raise UserError(
            f"{path}: the tokenizer has no chat template; copy tokenizer_config.json from the base model"
        )
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto").eval()
    if torch.cuda.is_available():
        model = model.to("cuda")
    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)

    # transformers' own stop_strings rebuilds a table over the whole 151k-token vocabulary on every generate
    # call (~1.3 s) and adds ~50 ms a step on CPU; decoding the last few tokens costs microseconds. run_loop
    # cuts at the first stop tag anyway, so this only saves time.
    class StopAtTags(StoppingCriteria):
        """Stop once the text generated since `start` contains a stop tag."""

        def __init__(self, start: int) -> None:
            self.start = start

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
            tail = tokenizer.decode(input_ids[0, max(self.start, input_ids.shape[1] - 16) :])
            return torch.full((1,), any(tag in tail for tag in STOP_TAGS), device=input_ids.device)

    def for_question(question: str) -> Generate:
        messages = [{"role": "system", "content": ARPO_SYSTEM_PROMPT}, {"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

        def generate(text: str, max_new_tokens: int, seconds_left: float) -> Step:
            # Re-encoding prompt + text each call, as ARPO's completions client does.
            enc = tokenizer(prompt + text, return_tensors="pt", add_special_tokens=False).to(model.device)
            start = enc["input_ids"].shape[1]
            config = GenerationConfig(
                max_new_tokens=max_new_tokens,
                do_sample=False,
                max_time=seconds_left,
                eos_token_id=sorted(eos_ids),
                pad_token_id=pad,
            )
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=config, stopping_criteria=[StopAtTags(start)])
            new = out[0, start:].tolist()
            ended = bool(new) and new[-1] in eos_ids
            return Step(tokenizer.decode(new, skip_special_tokens=True), len(new), ended)

        return generate

    return for_question


def run(args: argparse.Namespace) -> int:
    """Verify MODEL on the prompts and print (and optionally save) the report."""
    if min(args.max_new_tokens, args.max_total_tokens, args.time_limit) <= 0:
        raise UserError("--max-new-tokens, --max-total-tokens and --time-limit must be > 0")
    if min(args.max_python_calls, args.max_search_calls) < 0:
        raise UserError("--max-python-calls and --max-search-calls must be >= 0 (0 refuses every call)")
    model_dir = Path(args.model)
    check_model_dir(model_dir)
    if args.report:  # before the model loads: never over the prompts, the corpus or a file of the model
        inputs = {f"MODEL's {p.name}": p for p in sorted(model_dir.iterdir())}
        inputs |= {flag: Path(v) for flag, v in (("--prompts", args.prompts), ("--corpus", args.corpus)) if v}
        check_outputs(inputs, {"--report": Path(args.report)})
    prompts = read_prompts(Path(args.prompts)) if args.prompts else list(DEFAULT_PROMPTS)
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
    probe = run_python("print(1 + 1)", allow_weak=args.allow_weak_sandbox)  # refuses where it cannot isolate
    if probe.mode == "weak":
        print(f"arpo-sft: warning: weak python sandbox ({isolation_problem()}), as {WEAK_FLAG} allows")
    if probe.stdout != "2\n":  # every <python> result would be this failure: say so once, up front
        why = (probe.tool_output() or f"exit status {probe.exit_code}").splitlines()[-1]
        raise UserError(f"the python sandbox cannot run code on this host: {why}")
    factory = load_generator_factory(model_dir)
    reports = [verify_prompt(p, factory(p.question), search, limits, result_format) for p in prompts]
    summary = summarize(reports)
    print_report(model_dir, reports, summary)
    if args.report:
        settings = {**asdict(limits), "result_format": asdict(result_format)}  # the exact bytes appended
        settings |= {"sandbox_mode": probe.mode, "corpus": args.corpus or "demo"}
        rows = [asdict(r) for r in reports]
        write_json(
            Path(args.report),
            {"model": str(model_dir), "settings": settings, "summary": summary, "prompts": rows},
        )
        print(f"report written to {args.report}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `verify` to the `arpo-sft` command tree."""
    p = subparsers.add_parser(
        "verify",
        help="run a model through ARPO's tool loop on a few questions; report format compliance and answers",
        description="Generate greedily with MODEL's own chat template and ARPO's system prompt, as ARPO's\n"
        "inference does: each <python> call runs in a sandbox (see `arpo-sft sandbox run --help`; no\n"
        "network, no host files), each <search> call against a local corpus, and its <result>\n"
        "is appended inline before generation continues. Reports per prompt: format compliance (ARPO's\n"
        "tag rules), tool calls, the \\boxed{} answer, whether it matches the reference, time taken.",
        epilog="example:\n  arpo-sft verify checkpoints/qwen2.5-7b-sft --prompts prompts.jsonl --report verify.json\n"
        'prompts.jsonl holds one {"question": "...", "answer": "42"} per line (answer optional).',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("model", metavar="MODEL", help="Hugging Face model directory (weights, config.json, tokenizer)")
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
    add("--report", metavar="FILE.json", help="also write the full report, trajectories included, as JSON")
    add(
        WEAK_FLAG,
        action="store_true",
        help="where the host allows no namespaces, run model code anyway with "
        "rlimits, nobody and the socket module disabled (host files readable, ctypes sockets work); without "
        "it verify exits 3 there. The report records sandbox_mode",
    )
    p.set_defaults(func=run)
