"""LLaMA-Factory's own supervised processors run over ShareGPT-like rows, as its loader runs them."""

from __future__ import annotations

import json

from ..conftest import DEMO_DATA

IGNORE = -100
SYSTEM = "You are a helpful assistant."


def encode(tokenizer, rows: list[dict], template: str, **data_args) -> list[dict]:
    """Run LLaMA-Factory's own supervised processor (plain or packed) over ShareGPT-like rows."""
    from llamafactory.data.processor.supervised import (
        PackedSupervisedDatasetProcessor,
        SupervisedDatasetProcessor,
    )
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    args = DataArguments(template=template, cutoff_len=data_args.pop("cutoff_len", 4096), **data_args)
    processor_class = PackedSupervisedDatasetProcessor if args.packing else SupervisedDatasetProcessor
    processor = processor_class(
        template=get_template_and_fix_tokenizer(tokenizer, args),
        tokenizer=tokenizer,
        processor=None,
        data_args=args,
    )
    batch = {
        "_prompt": [row["prompt"] for row in rows],
        "_response": [row["response"] for row in rows],
        "_system": [row.get("system", SYSTEM) for row in rows],
        "_tools": [""] * len(rows),
        "_images": [None] * len(rows),
        "_videos": [None] * len(rows),
        "_audios": [None] * len(rows),
    }
    out = processor.preprocess_dataset(batch)
    keys = [key for key in out if key not in ("images", "videos", "audios")]
    return [dict(zip(keys, values, strict=True)) for values in zip(*(out[key] for key in keys), strict=True)]


def row(answer: str, question: str = "What is 6 * 7?") -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "response": [{"role": "assistant", "content": answer}],
    }


def assistant_messages(rows: list[dict]) -> list[str]:
    return [m["content"] for r in rows for m in r["prompt"] + r["response"] if m["role"] == "assistant"]


def demo_rows() -> list[dict]:
    rows = []
    for line in DEMO_DATA.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        human, gpt = data["conversations"]
        rows.append({**row(gpt["value"], human["value"]), "system": data["system"]})
    return rows
