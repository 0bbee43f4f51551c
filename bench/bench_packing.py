"""Share of non-padding tokens per batch, with and without packing, on two length distributions.

    python bench/bench_packing.py                       # bundled demo rows and 10,000 long-tailed rows
    python bench/bench_packing.py --rows 54574 --cutoff 15000 --batch 1 4

Row lengths are exact: each row is measured as LLaMA-Factory tokenizes it under `template: qwen` (real
Qwen2.5 vocabulary), truncated at the cutoff. The batches follow LLaMA-Factory 0.9.5's rules:
- no packing: rows in shuffled order, `per_device_train_batch_size` at a time, each batch padded to its
  longest row rounded up to a multiple of 8 (the SFT collator's `pad_to_multiple_of=8`);
- `packing`: per preprocessing batch of 1,000 rows, LLaMA-Factory's own `greedy_knapsack` fills packs of
  cutoff_len - 1 tokens, each padded to cutoff_len;
- `neat_packing`: the same packs (only the attention mask differs), so the same share.
The share is real tokens / all tokens the model computes over, one figure per (data, batch size).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
LF_BATCH = 1000  # preprocessing_batch_size's default: packing never crosses these groups


def lengths_of(rows: list[dict], cutoff: int, model: Path) -> list[int]:
    """Tokens each row trains on at `cutoff` (packing cuts at cutoff - 1, as LLaMA-Factory does)."""
    from arpo_train_sft.data.conversation import to_conversation
    from arpo_train_sft.data.tokens import load_tokenizer, measure
    from arpo_train_sft.lf.render import load_template

    tokenizer = load_tokenizer(str(model))
    template = load_template(tokenizer, "qwen")
    out = []
    for start in range(0, len(rows), 512):
        batch = [to_conversation(row) for row in rows[start : start + 512]]
        out += [min(row.total, cutoff) for row in measure(tokenizer, template, batch, cutoff)]
    return out


def share_unpacked(lengths: list[int], batch: int, seed: int = 0) -> float:
    order = lengths[:]
    random.Random(seed).shuffle(order)
    real = padded = 0
    for start in range(0, len(order), batch):
        group = order[start : start + batch]
        longest = -(-max(group) // 8) * 8
        real += sum(group)
        padded += longest * len(group)
    return real / padded


def share_packed(lengths: list[int], cutoff: int) -> float:
    from llamafactory.data.processor.processor_utils import greedy_knapsack

    real = packs = 0
    for start in range(0, len(lengths), LF_BATCH):
        group = [min(n, cutoff - 1) for n in lengths[start : start + LF_BATCH]]
        real += sum(group)
        packs += len(greedy_knapsack(group, cutoff - 1))
    return real / (packs * cutoff)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000, help="long-tailed synthetic rows")
    parser.add_argument("--cutoff", type=int, default=15_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpo-bench"))
    args = parser.parse_args()

    import json

    from bench_prepare import synthetic_rows

    from arpo_train_sft.demo.model import build_tiny_model

    model = args.workdir / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model)
    demo = [json.loads(line) for line in (REPO / "dataset_info/demo/arpo_sft_demo.jsonl").open()]
    data = {
        "bundled demo (300 rows)": demo,
        f"long-tailed synthetic ({args.rows:,} rows)": synthetic_rows(args.rows, 0),
    }
    print(f"cutoff_len {args.cutoff}; share of non-padding tokens per batch")
    print(
        f"{'data':36s} {'batch':>5s} {'no packing':>10s} {'packing':>8s} {'neat_packing':>12s}  median/max length"
    )
    for name, rows in data.items():
        lengths = lengths_of(rows, args.cutoff, model)
        packed = share_packed(lengths, args.cutoff)
        middle = sorted(lengths)[len(lengths) // 2]
        for batch in args.batch:
            print(
                f"{name:36s} {batch:5d} {share_unpacked(lengths, batch):10.1%} {packed:8.1%} {packed:12.1%}"
                f"  {middle}/{max(lengths)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
