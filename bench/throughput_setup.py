"""What a gpu_throughput run trains: the model folder, the rows in their order, the config, the estimate."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from arpo_train_sft.family import QWEN25_SHAPES, ModelShape

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import synthetic_rows  # noqa: E402  (the one owner of the ARPO length model)

REPO = Path(__file__).resolve().parents[1]


def _config(shape: ModelShape) -> dict:
    """The config.json keys of a shape (the package's one table of Qwen2.5 shapes, family.py)."""
    return dict(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied,
    )


# The 3B and 7B presets' models; "tiny" is the demo model's shape (demo/model.py), for the CPU smoke run.
SHAPES = {
    "3b": _config(QWEN25_SHAPES["Qwen2.5-3B"]),
    "7b": _config(QWEN25_SHAPES["Qwen2.5-7B"]),
    "tiny": _config(ModelShape(64, 128, 2, 4, 2, 151936, tied=True)),
}
PRESETS = {"3b": "yaml/qwen2.5-3b.yaml", "7b": "yaml/qwen2.5-7b.yaml", "tiny": "yaml/demo_cpu.yaml"}
SEED = 0  # which ARPO-shaped rows are drawn
NEVER = 1_000_000  # a max_steps no run reaches: LLaMA-Factory's final save_model comes after the last step


@dataclasses.dataclass(frozen=True)
class Run:
    """One launch: a model shape at a cutoff on some ranks, with at most one setting changed from the preset."""

    model: str
    cutoff: int
    ranks: int = 1
    attn: str = "fa2"
    liger: bool = True
    checkpointing: bool = True

    @property
    def name(self) -> str:
        liger = "liger-on" if self.liger else "liger-off"
        gc = "gc" if self.checkpointing else "no-gc"
        return f"{self.model} cutoff {self.cutoff} x{self.ranks} {self.attn} {liger} {gc}"

    @property
    def slug(self) -> str:
        """The name as a file name."""
        return self.name.replace(" ", "_")


def child_env(**extra: str) -> dict[str, str]:
    """This environment with the repo importable, for every child process."""
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra}


def prepare_model(work: Path, model: str) -> Path:
    """A model directory with the architecture's config and the real Qwen2.5 tokenizer, no weights."""
    from arpo_train_sft.demo.model import build_tiny_model

    tiny = work / "tiny-model"
    if not (tiny / "config.json").exists():
        build_tiny_model(tiny)
    if model == "tiny":
        return tiny
    folder = work / f"qwen2.5-{model}-random"
    folder.mkdir(parents=True, exist_ok=True)
    for item in tiny.iterdir():
        if item.name.startswith(("tokenizer", "chat_template", "generation_config")):
            shutil.copy2(item, folder / item.name)
    config = json.loads((tiny / "config.json").read_text())
    config.update(SHAPES[model], max_position_embeddings=32768, torch_dtype="bfloat16")
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def long_row(i: int) -> dict:
    """A row of ~24,000 tokens, longer than any cutoff here: it trains exactly cutoff_len tokens."""
    thought = "Let me check this step once more before I use the tool. " * 2000
    question = {"from": "human", "value": f"Question {i}: what is {i} squared?"}
    answer = {"from": "gpt", "value": f"<think>{thought}</think><answer>{i * i}</answer>"}
    return {"system": "You are a careful solver.", "conversations": [question, answer]}


def prepare_data(work: Path, long_rows: int, arpo_rows: int) -> Path:
    """A dataset_dir with long_rows cutoff-length rows, then arpo_rows ARPO-shaped ones, in that order."""
    data = work / f"data-{long_rows}-{arpo_rows}-seed{SEED}"
    if (data / "dataset_info.json").exists():
        return data
    data.mkdir(parents=True, exist_ok=True)
    rows = [long_row(i) for i in range(long_rows)] + synthetic_rows(arpo_rows, seed=SEED)
    with (data / "bench.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    registry = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    entry = {**registry["arpo_sft_demo"], "file_name": "bench.jsonl"}
    (data / "dataset_info.json").write_text(json.dumps({"bench": entry}))  # written last: marks it complete
    return data


def run_config(run: Run, work: Path, data: Path, rows: int, gpu: bool) -> Path:
    """The shipped preset with this run's model, rows and changed setting; it logs every step, saves nothing."""
    values = yaml.safe_load((REPO / PRESETS[run.model]).read_text())
    values.update(
        model_name_or_path=str(prepare_model(work, run.model)),
        train_from_scratch=True,
        dataset_dir=str(data),
        dataset="bench",
        max_samples=rows,
        disable_shuffling=True,  # rows in file order: rank r of W trains row k*W + r at step k+1
        cutoff_len=run.cutoff,
        preprocessing_num_workers=1,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        max_steps=NEVER,
        save_strategy="no",
        # preflight counts max_steps // save_steps checkpoints whatever save_strategy says; make that 0
        save_steps=NEVER * 10,
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",
        plot_loss=False,
        report_to="none",
        overwrite_output_dir=True,
        output_dir=str(work / "out" / run.slug),
        deepspeed=str(REPO / values["deepspeed"]),
        enable_liger_kernel=run.liger and gpu,
        disable_gradient_checkpointing=not run.checkpointing,
        flash_attn=run.attn if gpu else "auto",
    )
    path = work / "configs" / f"{run.slug}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


def estimate(
    config: Path, ranks: int, gpu_mem_gib: float, overrides: tuple[str, ...] = ()
) -> tuple[float | None, bool]:
    """`arpo-sft estimate`'s total GiB per GPU for this config and whether it fits; (None, True) if it failed."""
    cmd = [
        sys.executable,
        "-m",
        "arpo_train_sft.cli",
        "estimate",
        str(config),
        *overrides,
        "--gpus",
        str(ranks),
    ]
    cmd += ["--gpu-mem", f"{gpu_mem_gib:.1f}", "--json"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=child_env())
    if out.returncode != 0:
        print(f"arpo-sft estimate failed for {config.name}: {out.stderr.strip()[-300:]}", flush=True)
        return None, True
    data = json.loads(out.stdout)
    return data["total_gib"], data["fits"]
