"""`arpo-sft data parity`: does training see the same tokens that ARPO-style inference feeds the model?

Training renders rows with a LLaMA-Factory template; ARPO's inference renders the system prompt and the
question with the tokenizer's own chat template (`add_generation_prompt=True`) and appends the model's
raw continuation, tool results included. Any difference between the two is a silent train/test skew.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..family import IM_END, IM_START
from .flags import positive_number, whole_number

CONTEXT_TOKENS = 6


@dataclass(frozen=True)
class Mismatch:
    """The first token where training and inference disagree for one row."""

    row: int
    position: int
    train: str
    infer: str


def first_difference(train: list[int], infer: list[int]) -> int | None:
    """Index of the first differing token (a length difference counts), or None when equal."""
    for index, (a, b) in enumerate(zip(train, infer, strict=False)):
        if a != b:
            return index
    return None if len(train) == len(infer) else min(len(train), len(infer))


def context(tokenizer: Any, ids: list[int], at: int) -> str:
    """A few tokens around `at`, the differing one in brackets."""
    before = tokenizer.decode(ids[max(at - CONTEXT_TOKENS, 0) : at], skip_special_tokens=False)
    token = tokenizer.decode(ids[at : at + 1], skip_special_tokens=False) if at < len(ids) else "<end>"
    after = tokenizer.decode(ids[at + 1 : at + 1 + CONTEXT_TOKENS], skip_special_tokens=False)
    return repr(f"{before}[{token}]{after}")


def family_problem(tokenizer: Any, template: Any, template_name: str) -> str | None:
    """Why `template_name` does not suit this tokenizer's model family, if it does not."""
    slots = " ".join(str(slot) for slot in template.format_user.slots)
    for marker in (IM_START, IM_END):
        if marker in slots and marker not in tokenizer.get_vocab():
            return (
                f"template '{template_name}' writes {marker}, which this tokenizer does not have as a token"
            )
    return None


def compare(args: argparse.Namespace) -> tuple[list[Mismatch], int, int, str | None]:
    """(mismatches, rows compared, rows given the template's default system prompt, family problem)."""
    from ..lf.render import render
    from .conversation import blocking, normalize, problems_of, to_conversation
    from .rows import iter_rows
    from .tokens import load_template, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    if not tokenizer.chat_template:
        raise UserError(
            f"--model {args.model}: the tokenizer has no chat_template; inference has nothing to render"
        )
    template = load_template(tokenizer, args.template)
    suffix = (
        tokenizer(f"{IM_END}\n", add_special_tokens=False)["input_ids"]
        if args.template.startswith("qwen")
        else []
    )
    mismatches: list[Mismatch] = []
    compared = defaulted = 0
    for row in islice(iter_rows(args.path), args.sample):
        if blocking(problems_of(row)):
            continue
        conversation = to_conversation(normalize(row.data, fix=False)[0])
        rendered = render(tokenizer, template, [conversation])
        prompt_ids, target = (rendered.ids(parts) for parts in rendered.messages[0])
        question, answer = conversation.messages[0]["content"], conversation.messages[1]["content"]
        # Training appends the end-of-turn suffix after the trajectory; inference stops before it.
        if target[-len(suffix) :] == suffix:
            target = target[: -len(suffix)]
        train_ids = prompt_ids + target
        chat = [{"role": "user", "content": question}]
        if conversation.system:
            chat.insert(0, {"role": "system", "content": conversation.system})
        else:
            defaulted += bool(template.default_system)
        prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        infer_ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        compared += 1
        at = first_difference(train_ids, infer_ids)
        if at is not None:
            mismatches.append(
                Mismatch(row.number, at, context(tokenizer, train_ids, at), context(tokenizer, infer_ids, at))
            )
    return mismatches, compared, defaulted, family_problem(tokenizer, template, args.template)


def add_parser(subparsers: Any) -> None:
    """`arpo-sft data parity`."""
    parser = subparsers.add_parser(
        "parity",
        help="compare what training sees with what ARPO-style inference feeds the model, token by token",
        description="For a sample of rows, render the prompt and trajectory as LLaMA-Factory will train them "
        "and as ARPO's inference does (the tokenizer's chat template with add_generation_prompt=True, then the "
        "raw continuation), and report the first differing token with context. Also flags rows without a "
        "system prompt (the template injects its default one) and a template that does not match the model "
        "family. Rows LLaMA-Factory would drop or crash on (e.g. lone surrogates) are skipped. Exit 0 when "
        "training and inference agree, 1 when they do not, 2 for a usage or input error (one line).",
        epilog="example:\n  arpo-sft data parity --model Qwen/Qwen2.5-7B-Instruct --template qwen "
        "dataset_info/final_5w4_still.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="JSONL or JSON array of ARPO rows (gzipped, or -, too)")
    parser.add_argument("--model", required=True, help="model dir or hub id: its tokenizer and chat template")
    parser.add_argument(
        "--template", default="qwen", help="LLaMA-Factory template used for training (default qwen)"
    )
    parser.add_argument(
        "--sample", type=positive_number, default=200, help="rows to compare, from the top (default 200)"
    )
    parser.add_argument("--show", type=whole_number, default=5, help="mismatching rows to print (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compare and report; exit 1 on any skew."""
    mismatches, compared, defaulted, family = compare(args)
    print(
        f"compared {compared} rows of {args.path}: template '{args.template}' vs {args.model}'s chat template"
    )
    if family:
        print(f"MISMATCH model family: {family}")
    if defaulted:
        print(f"WARNING {defaulted} rows have no system prompt: training injects the template's default one")
    for mismatch in mismatches[: args.show]:
        print(f"row {mismatch.row}: first difference at token {mismatch.position}")
        print(f"  training : {mismatch.train}")
        print(f"  inference: {mismatch.infer}")
    if mismatches:
        print(f"{len(mismatches)} of {compared} rows differ between training and inference")
    else:
        print("training and inference agree token for token")
    return 1 if mismatches or family else 0
