"""`arpo-sft data prepare` and the tokenized build vs LLaMA-Factory's own preprocessing, on the same rows and cores.

    python bench/bench_prepare.py                     # 54,574 synthetic rows shaped like ARPO-SFT-54K
    python bench/bench_prepare.py --rows 10000 --rounds 2 --workers 2

Both sides use the real Qwen2.5 tokenizer (rebuilt offline), template `qwen` and cutoff_len 15000, and run
as separate processes, alternating, with the same CPU budget: LLaMA-Factory's `get_dataset` (load JSON,
convert ShareGPT, tokenize; a fresh datasets cache each time) gets `preprocessing_num_workers=--workers`,
and `prepare` (one process whose Rust tokenizer batches run on a thread pool) gets that many threads.
A third side is the launcher's tokenized build (`lf/tokenize.build`: LLaMA-Factory's `get_dataset` with
`encode` through tiktoken where `lf/fastbpe.py` proves it exact, saved to disk) with the same workers, and
a fourth the old ceiling: the tokenizer's own batch call on the same conversations' text with the same
threads, nothing else. Figures: rows/second measured inside each process (imports excluded) and the
peak resident memory of each process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REAL_ROWS = 54_574
CUTOFF = 15_000

LLAMAFACTORY_SIDE = """
import sys, time
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
model, dataset_dir, out, workers, cutoff, template = sys.argv[1:7]
if template == "qwen_mask_results":
    import arpo_train_sft.lf.masking  # registers it, as on the ranks
args = dict(stage="sft", do_train=True, finetuning_type="full", model_name_or_path=model, dataset="bench",
            dataset_dir=dataset_dir, template=template, cutoff_len=int(cutoff), output_dir=out, overwrite_cache=True,
            preprocessing_num_workers=int(workers) or None, report_to="none")
model_args, data_args, training_args, _, _ = get_train_args(args)
start = time.perf_counter()
tokenizer_module = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
elapsed = time.perf_counter() - start
print("ROWS", len(dataset["train_dataset"]), "SECONDS", elapsed)
"""

CEILING_SIDE = """
import json, sys, time
from transformers import AutoTokenizer
model, source = sys.argv[1:3]
tokenizer = AutoTokenizer.from_pretrained(model)
texts = []
for line in open(source, encoding="utf-8"):
    turns = json.loads(line)["conversations"]
    texts.append("".join(f"<|im_start|>{t['from']}\\n{t['value']}<|im_end|>\\n" for t in turns))
start = time.perf_counter()
for i in range(0, len(texts), 512):
    tokenizer(texts[i : i + 512], add_special_tokens=False)
print("ROWS", len(texts), "SECONDS", time.perf_counter() - start)
"""

BUILD_SIDE = """
import sys, time
import llamafactory.data, llamafactory.hparams, llamafactory.model, tiktoken  # imports excluded, as for LF
from arpo_train_sft.lf import fastbpe, masking
from arpo_train_sft.lf.tokenize import build
model, dataset_dir, out, workers, cutoff, template = sys.argv[1:7]
args = dict(stage="sft", do_train=True, finetuning_type="full", model_name_or_path=model, dataset="bench",
            dataset_dir=dataset_dir, template=template, cutoff_len=int(cutoff),
            preprocessing_num_workers=int(workers) or None)
start = time.perf_counter()
rows, encoder = build(args, __import__("pathlib").Path(out))
print("ROWS", rows["train"], "SECONDS", time.perf_counter() - start)
"""

PREPARE_SIDE = """
import sys, time
from arpo_train_sft.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print("ROWS -1 SECONDS", time.perf_counter() - start)
sys.exit(code)
"""


def synthetic_rows(n: int, seed: int) -> list[dict]:
    """Rows with ARPO's schema and tags, trajectories stretched to a long-tailed length distribution."""
    from arpo_train_sft.demo.data import generate_rows

    rng = random.Random(seed)
    # generate_rows(k) is generate_rows(300)'s first k rows, and each runs a Python snippet: build no more.
    base = generate_rows(min(n, 300), seed)
    filler = "Let me double-check the previous step carefully before moving on. "
    rows = []
    for i in range(n):
        row = json.loads(json.dumps(base[i % len(base)]))
        # Median ~6,000 characters (~1,500 tokens); about 1 row in 50 is longer than 15,000 tokens.
        target = int(rng.lognormvariate(8.7, 0.95))
        gpt = row["conversations"][1]
        pad = max(target - len(gpt["value"]), 0) // len(filler)
        gpt["value"] = gpt["value"].replace("<think>", "<think> " + filler * pad, 1)
        row["conversations"][0]["value"] += f" (variant {i})"
        rows.append(row)
    return rows


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds reported by the process, wall seconds, peak RSS in MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out[-2000:]}")
    print("".join(f"  {line}\n" for line in out.splitlines() if line.startswith("encoder:")), end="")
    line = next(line for line in out.splitlines() if line.startswith("ROWS"))
    return float(line.split()[3]), wall, usage.ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="the CPU budget of each side (default: all CPUs)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpo-bench"))
    parser.add_argument("--template", default="qwen", choices=("qwen", "qwen_mask_results"))
    args = parser.parse_args()

    from arpo_train_sft.demo.model import build_tiny_model

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model)
    data_dir = work / f"data-{args.rows}"
    source = data_dir / "bench.jsonl"
    if not source.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        with source.open("w", encoding="utf-8") as handle:
            for row in synthetic_rows(args.rows, seed=0):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        entry = json.loads((Path(__file__).parents[1] / "dataset_info" / "dataset_info.json").read_text())
        bench_entry = {**entry["final_5w4_still"], "file_name": "bench.jsonl"}
        (data_dir / "dataset_info.json").write_text(json.dumps({"bench": bench_entry}))
    size_mb = source.stat().st_size / 2**20

    sides = ("prepare", "llamafactory", "build", "tokenizer")
    results: dict[str, list[tuple[float, float, int]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side in results:
            cache = work / "hf-datasets-cache"
            shutil.rmtree(cache, ignore_errors=True)
            env = {
                **os.environ,
                "HF_DATASETS_CACHE": str(cache),
                "TOKENIZERS_PARALLELISM": "true",
                "RAYON_NUM_THREADS": str(args.workers),
            }
            shutil.rmtree(work / "built", ignore_errors=True)
            if side == "tokenizer":
                cmd = [sys.executable, "-c", CEILING_SIDE, str(model), str(source)]
            elif side == "build":
                cmd = [
                    sys.executable,
                    "-c",
                    BUILD_SIDE,
                    str(model),
                    str(data_dir),
                    str(work / "built"),
                    str(args.workers),
                    str(CUTOFF),
                    args.template,
                ]
            elif side == "prepare":
                cmd = [
                    sys.executable,
                    "-c",
                    PREPARE_SIDE,
                    "data",
                    "prepare",
                    "--input",
                    str(source),
                    "--output",
                    str(work / "prepared.jsonl"),
                    "--model",
                    str(model),
                    "--cutoff-len",
                    str(CUTOFF),
                    "--template",
                    args.template,
                ]
            else:
                cmd = [
                    sys.executable,
                    "-c",
                    LLAMAFACTORY_SIDE,
                    str(model),
                    str(data_dir),
                    str(work / "lf-out"),
                    str(args.workers),
                    str(CUTOFF),
                    args.template,
                ]
            results[side].append(run(cmd, env))
            print(side, results[side][-1], flush=True)

    print(
        f"\n{args.rows} rows, {size_mb:.0f} MiB, template {args.template}, cutoff_len {CUTOFF}, {os.cpu_count()} CPUs, "
        f"{args.workers} workers/threads per side, rounds {args.rounds}, load average {os.getloadavg()[0]:.1f}"
    )
    medians = {}
    for side, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        medians[side] = args.rows / seconds
        print(
            f"{side:13s} {medians[side]:9.0f} rows/s  ({seconds:.1f} s in-process, "
            f"{statistics.median(r[1] for r in runs):.1f} s wall, peak RSS {max(r[2] for r in runs)} MiB)"
        )
    lf = medians["llamafactory"]
    print(f"ratio build / llamafactory at equal workers: {medians['build'] / lf:.2f}x")
    print(
        f"ratio prepare / llamafactory at equal workers: {medians['prepare'] / lf:.2f}x "
        f"(the HF tokenizer's batch call alone: {medians['tokenizer'] / lf:.2f}x)"
    )


if __name__ == "__main__":
    main()
