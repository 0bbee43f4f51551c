"""What a training run measured, read back from LLaMA-Factory's trainer_log.jsonl, and the arithmetic on it.

The run sets `include_num_input_tokens_seen: non_padding`, `logging_steps: 1` and RECORD_VRAM=1, so
LLaMA-Factory's LogCallback (rank 0 only) writes one row per optimizer step with `total_tokens` (the
non-padding tokens of every rank so far: transformers gathers the count over all ranks), `throughput`
(total_tokens / seconds since on_train_begin, to 0.01 token/s) and rank 0's `vram_allocated` /
`vram_reserved` (torch.cuda.max_memory_allocated / max_memory_reserved since the process started, GiB).
Its `elapsed_time` is rounded to whole seconds, too coarse for steps of a second or two, so the time of
each row is recovered as total_tokens / throughput instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from arpo_train_sft.family import shape_from_config
from arpo_train_sft.rank.metrics import peak_tflops
from arpo_train_sft.train.shapes import flops_per_token


@dataclass(frozen=True)
class LogRow:
    """One optimizer step as rank 0 logged it."""

    step: int
    tokens: int  # non-padding tokens of all ranks since the start
    seconds: float  # since on_train_begin, at the end of this step
    allocated_gib: float | None  # rank 0's peak so far; None on CPU, where LLaMA-Factory logs 0
    reserved_gib: float | None


@dataclass(frozen=True)
class Rate:
    """Throughput over a run of consecutive steps."""

    steps: int
    tokens_per_s_per_gpu: float
    mfu: float | None  # None when the card's peak is unknown (CPU)
    mean_row_tokens: float  # non-padding tokens per row (one row per GPU per step)


def read_log(path: Path) -> list[LogRow]:
    """The step rows of a trainer_log.jsonl; a last line cut short by the kill is left out."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # the writer thread was mid-line when the run was killed
            raise ValueError(f"{path}:{i + 1}: not JSON: {line[:80]!r}") from None
        if "total_tokens" not in row:
            raise ValueError(
                f"{path}:{i + 1}: no total_tokens; the run needs include_num_input_tokens_seen: non_padding"
            )
        vram = row.get("vram_allocated") or None  # 0.0 where there is no GPU
        rows.append(
            LogRow(
                step=row["current_steps"],
                tokens=row["total_tokens"],
                seconds=row["total_tokens"] / row["throughput"],
                allocated_gib=vram,
                reserved_gib=row.get("vram_reserved") if vram else None,
            )
        )
    return rows


def model_flops_per_token(shape: dict, seq_len: int) -> float:
    """Training FLOPs per token of a seq_len-token row of the config-shaped model: the package's one formula
    (train/shapes.py: 6 x matmul parameters + 6 x layers x hidden x seq_len, causal attention, recomputation
    not counted), the same that metrics.jsonl's mfu uses during every run."""
    return flops_per_token(shape_from_config(shape), seq_len)


def rate(
    rows: list[LogRow], first: int, last: int, ranks: int, shape: dict, peak_tflops: float | None
) -> Rate:
    """Steps first+1 .. last (the row of step `first` is the clock's start): tokens/s/GPU and MFU.

    Each step trains one row per rank, so a step's row length is its new tokens / ranks: exact on one rank;
    on several it is their mean, which undercounts the attention term by the spread of their lengths.
    """
    by_step = {row.step: row for row in rows}
    missing = [step for step in range(first, last + 1) if step not in by_step]
    if missing:
        raise ValueError(f"steps {missing} are not in the log (it needs logging_steps: 1)")
    flops = 0.0
    for step in range(first + 1, last + 1):
        new = by_step[step].tokens - by_step[step - 1].tokens
        flops += new * model_flops_per_token(shape, round(new / ranks))
    start, end = by_step[first], by_step[last]
    seconds, tokens = end.seconds - start.seconds, end.tokens - start.tokens
    mfu = flops / (seconds * ranks * peak_tflops * 1e12) if peak_tflops else None
    return Rate(last - first, tokens / seconds / ranks, mfu, tokens / ((last - first) * ranks))


def peak_gib(rows: list[LogRow], last: int) -> tuple[float | None, float | None]:
    """Rank 0's peak allocated and reserved GiB up to step `last`; (None, None) without a GPU."""
    seen = [row for row in rows if row.step <= last and row.allocated_gib is not None]
    if not seen:
        return None, None
    return max(row.allocated_gib for row in seen), max(row.reserved_gib or 0.0 for row in seen)


def published_peak(device_name: str) -> float | None:
    """The datasheet's dense bf16 TFLOP/s for this card (rank/metrics.py's table, as metrics.jsonl uses it)."""
    return peak_tflops(device_name, env={}).tflops
