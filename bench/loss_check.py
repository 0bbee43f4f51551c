"""Which loss a preset trains: one optimizer step through the launcher, checked against ARPO's formula.

    python bench/loss_check.py --workdir /tmp/loss-check --json /tmp/loss-check.json
    python bench/loss_check.py --accumulation 2 --json out.json            # 4 rows, 2 micro-batches a rank
    python bench/loss_check.py --json on.json enable_liger_kernel=true     # GPU: Liger's fused loss

ARPO trained with transformers 4.52.4, where `average_tokens_across_devices` defaults to false: each rank
divides its summed token losses by the label tokens of its own accumulated micro-batches, and the
gradient all-reduce then averages the ranks. transformers 5 defaults it to true, which divides by the
label tokens of the whole global batch. With rows of very unequal length the two differ.

This trains the preset (yaml/sft_config.yaml unless --config) for one step on a tiny random Qwen2 model,
one row per micro-batch, rows alternately short and long and never shuffled, on 2 CPU ranks (gloo) or on
every visible GPU. Rank r's k-th micro-batch is row k x ranks + r (accelerate deals the batches out in
turn). The first logged loss is then compared with both formulas, computed here in fp32 from the same
initial weights and the tokenized rows the ranks loaded, with no Trainer involved. Without a GPU the
preset's GPU-only keys are swapped for CPU ones (bf16 off, sdpa, no Liger); key=value overrides come last.
Exit 0 when the logged loss is ARPO's, 1 otherwise, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CPU_RANKS = 2
# The logged loss is rounded to 4 decimals; fp32 forward passes on CPU agree far closer than that.
FP32_TOLERANCE = 2e-4
# bf16 weights and activations on a GPU move a loss of ~12 by up to ~1e-2 relative.
BF16_RELATIVE_TOLERANCE = 1e-2
SHORT_WORDS, LONG_WORDS = 12, 400


@dataclass(frozen=True)
class RowLoss:
    """One trained row: which rank and micro-batch took it, its label tokens and their summed loss."""

    rank: int
    micro: int
    tokens: int
    loss_sum: float


def arpo_loss(rows: list[RowLoss]) -> float:
    """ARPO's loss (transformers 4.52.4): each rank's token mean over its micro-batches, then the rank mean."""
    ranks = sorted({row.rank for row in rows})
    means = [
        sum(row.loss_sum for row in rows if row.rank == rank)
        / sum(row.tokens for row in rows if row.rank == rank)
        for rank in ranks
    ]
    return sum(means) / len(means)


def global_mean_loss(rows: list[RowLoss]) -> float:
    """transformers 5's default: the token mean over the whole global batch."""
    return sum(row.loss_sum for row in rows) / sum(row.tokens for row in rows)


def write_data(folder: Path, count: int) -> Path:
    """`count` rows, alternately short and long answers, registered as dataset `loss_check`."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "loss_check.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(count):
            words = SHORT_WORDS if i % 2 == 0 else LONG_WORDS
            thought = " ".join(f"step{j} of row {i} checks {j * (i + 3)}" for j in range(words // 6 + 1))
            row = {
                "system": "You are a careful solver.",
                "conversations": [
                    {"from": "human", "value": f"Question {i}: what is {i} cubed?"},
                    {"from": "gpt", "value": f"<think>{thought}</think><answer>{i**3}</answer>"},
                ],
            }
            handle.write(json.dumps(row) + "\n")
    registry = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text(encoding="utf-8"))
    entry = {**registry["arpo_sft_demo"], "file_name": "loss_check.jsonl"}
    (folder / "dataset_info.json").write_text(json.dumps({"loss_check": entry}), encoding="utf-8")
    return folder


def run_values(
    config: Path, work: Path, ranks: int, accumulation: int, gpu: bool, overrides: list[str]
) -> dict:
    """The preset's values with this check's model, data and one-step schedule; the caller's overrides last."""
    from omegaconf import OmegaConf

    from arpo_train_sft.demo.model import build_tiny_model

    model = work / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(model)
    values = OmegaConf.to_container(OmegaConf.load(config))
    values.update(
        model_name_or_path=str(model),
        dataset_dir=str(write_data(work / "data", ranks * accumulation)),
        dataset="loss_check",
        tokenized_path=str(work / "tokenized"),
        cutoff_len=1024,
        preprocessing_num_workers=1,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=accumulation,
        disable_shuffling=True,
        max_steps=1,
        logging_steps=1,
        save_steps=1000,
        plot_loss=False,
        report_to="none",
        output_dir=str(work / "out"),
        overwrite_output_dir=True,
        deepspeed=str(REPO / values["deepspeed"]) if values.get("deepspeed") else None,
    )
    if not gpu:
        values.update(bf16=False, fp16=False, flash_attn="sdpa", enable_liger_kernel=False)
    merged = OmegaConf.merge(OmegaConf.create(values), OmegaConf.from_dotlist(overrides))
    return {key: value for key, value in OmegaConf.to_container(merged).items() if value is not None}


def train_one_step(values: dict, work: Path, ranks: int) -> tuple[float, str]:
    """Launch `arpo-sft train` on the values; the first logged loss and the launcher's output."""
    path = work / "loss_check.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    env = {**os.environ, "NPROC_PER_NODE": str(ranks)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "arpo_train_sft.cli", "train", str(path), "--fresh", "--skip-preflight"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    log = Path(values["output_dir"]) / "trainer_log.jsonl"
    losses = [json.loads(line).get("loss") for line in log.read_text().splitlines()] if log.is_file() else []
    losses = [loss for loss in losses if loss is not None]
    if proc.returncode != 0 or not losses:
        raise RuntimeError(f"the one-step run failed (exit {proc.returncode}):\n{output[-3000:]}")
    return float(losses[0]), output


def row_losses(values: dict, ranks: int, accumulation: int) -> list[RowLoss]:
    """Each row's summed label-token loss under the initial weights, in fp32, from the rows the ranks loaded."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    dataset = load_from_disk(values["tokenized_path"])["train"]
    model = AutoModelForCausalLM.from_pretrained(values["model_name_or_path"], dtype=torch.float32)
    model.eval()
    rows = []
    for index in range(ranks * accumulation):
        ids = torch.tensor([dataset[index]["input_ids"]])
        labels = torch.tensor([dataset[index]["labels"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        # Position t predicts token t + 1; a label of -100 (the prompt) is not trained.
        loss = torch.nn.functional.cross_entropy(
            logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum"
        )
        micro, rank = divmod(index, ranks)
        rows.append(RowLoss(rank, micro, int((labels != -100).sum()), float(loss)))
    return rows


def verdict(first_loss: float, rows: list[RowLoss], bf16: bool) -> dict:
    """The JSON report: the logged loss beside both formulas, and which one it is."""
    arpo, global_mean = arpo_loss(rows), global_mean_loss(rows)
    tolerance = BF16_RELATIVE_TOLERANCE * abs(arpo) if bf16 else FP32_TOLERANCE
    return {
        "first_loss": first_loss,
        "arpo_loss": arpo,
        "global_mean_loss": global_mean,
        "tolerance": tolerance,
        "matches_arpo": abs(first_loss - arpo) <= tolerance,
        "matches_global_mean": abs(first_loss - global_mean) <= tolerance,
        # One rank, or rows of equal length, make the two formulas equal: then nothing was told apart.
        "formulas_differ": abs(arpo - global_mean) > 2 * tolerance,
        "ranks": len({row.rank for row in rows}),
        "accumulation": 1 + max(row.micro for row in rows),
        "rows": [asdict(row) for row in rows],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="set a key of the run (last wins)")
    parser.add_argument("--config", type=Path, default=REPO / "yaml" / "sft_config.yaml")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per rank in the step")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpo-loss-check"))
    parser.add_argument("--json", type=Path, help="write the report here as well as printing it")
    args = parser.parse_args(argv)

    import torch

    gpu = torch.cuda.is_available()
    ranks = torch.cuda.device_count() if gpu else CPU_RANKS
    args.workdir.mkdir(parents=True, exist_ok=True)
    values = run_values(args.config, args.workdir, ranks, args.accumulation, gpu, args.overrides)
    try:
        first, _ = train_one_step(values, args.workdir, ranks)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 2
    report = verdict(first, row_losses(values, ranks, args.accumulation), bool(values.get("bf16")))
    report["config"] = str(args.config)
    report["overrides"] = args.overrides
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if report["matches_arpo"] else 1


if __name__ == "__main__":
    sys.exit(main())
