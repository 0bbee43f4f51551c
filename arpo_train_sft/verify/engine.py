"""Greedy generation for verify with Hugging Face transformers: many rows per call, left-padded, each row
stopping on its own at a stop tag, EOS, its token budget or its deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arpo.prompt import ARPO_SYSTEM_PROMPT
from ..errors import UserError
from .loop import STOP_TAGS, Limits, Step

# On CPU: 16 rows a call was the fastest size bench/bench_verify_batch.py measured on 2 cores (BENCHMARKS.md);
# a row that stopped early keeps its place until the call ends, so wider batches pad more.
CPU_BATCH = 16
MAX_BATCH = 256  # on CUDA, whatever free memory says
GPU_MEMORY_SHARE = 0.7  # of the memory free after loading: the rest for the allocator and the prefill's peak
PROMPT_TOKENS = 1024  # ARPO's system prompt (~400 tokens) and a question
TAIL_TOKENS = 16  # decoded each step to find a stop tag: the longest tag is a few tokens


@dataclass(frozen=True)
class Row:
    """One prompt's next generation: its id, the full text so far, its token budget and deadline."""

    key: int
    text: str
    max_new_tokens: int
    deadline: float  # time.monotonic() at which the row stops


# (key, the finished generation), called as soon as that row stops, while the other rows go on.
OnDone = Callable[[int, Step], None]


def chat_prompt(tokenizer: Any, question: str) -> str:
    """The question in the tokenizer's chat template, after ARPO's system prompt, ready for the assistant."""
    messages = [{"role": "system", "content": ARPO_SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class HFEngine:
    """A loaded model and tokenizer generating greedily; `generate` takes any number of rows at once."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, where: Path) -> None:
        if not tokenizer.chat_template:
            raise UserError(
                f"{where}: the tokenizer has no chat template; copy tokenizer_config.json from the base model"
            )
        tokenizer.padding_side = "left"  # new tokens line up at the right end of every row
        self.model, self.tokenizer = model, tokenizer
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        tokenizer.pad_token_id = self.pad

    def prompt(self, question: str) -> str:
        """The text generation starts from for `question`."""
        return chat_prompt(self.tokenizer, question)

    def generate(self, rows: list[Row], on_done: OnDone) -> None:
        """Generate every row greedily; call on_done(row.key, step) the moment each row stops."""
        import torch
        from transformers import GenerationConfig, StoppingCriteria

        tokenizer, eos_ids = self.tokenizer, self.eos_ids
        # Re-encoding the whole text each call, as ARPO's completions client does.
        enc = tokenizer(
            [r.text for r in rows], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.model.device)
        start = enc["input_ids"].shape[1]
        done = [False] * len(rows)

        def finish(i: int, new: list[int]) -> None:
            done[i] = True
            ended = bool(new) and new[-1] in eos_ids
            on_done(rows[i].key, Step(tokenizer.decode(new, skip_special_tokens=True), len(new), ended))

        # transformers' own stop_strings rebuilds a table over the whole 151k-token vocabulary on every
        # generate call (~1.3 s) and adds ~50 ms a step on CPU; decoding the last few tokens costs
        # microseconds. ToolLoop cuts at the first stop tag anyway, so this only saves time.
        class StopEachRow(StoppingCriteria):
            def __call__(
                self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
            ) -> torch.Tensor:
                now, length = time.monotonic(), input_ids.shape[1] - start
                for i, row in enumerate(rows):
                    if done[i]:
                        continue
                    tail = tokenizer.decode(input_ids[i, max(start, input_ids.shape[1] - TAIL_TOKENS) :])
                    if (
                        int(input_ids[i, -1]) in eos_ids
                        or any(tag in tail for tag in STOP_TAGS)
                        or length >= row.max_new_tokens
                        or now >= row.deadline
                    ):
                        finish(i, input_ids[i, start:].tolist())
                return torch.tensor(done, device=input_ids.device)

        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in rows),
            do_sample=False,
            eos_token_id=sorted(eos_ids),
            pad_token_id=self.pad,
        )
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, stopping_criteria=[StopEachRow()])
        for i in range(len(rows)):  # a row transformers stopped without asking us (none expected)
            if not done[i]:
                finish(i, out[i, start:].tolist())

    def default_batch_size(self, limits: Limits) -> int:
        """CPU_BATCH on CPU; on CUDA as many rows as the KV cache and MLP activations of a full-length
        trajectory fit in GPU_MEMORY_SHARE of the free memory (an estimate, not yet measured on a GPU)."""
        import torch

        if self.model.device.type != "cuda":
            return CPU_BATCH
        free, _ = torch.cuda.mem_get_info(self.model.device)
        config = self.model.config.get_text_config()
        head_dim = config.hidden_size // config.num_attention_heads
        size = self.model.dtype.itemsize
        kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * size
        per_token = kv + 2 * config.intermediate_size * size  # the cache, and the MLP's widest activation
        tokens = PROMPT_TOKENS + 2 * limits.max_total_tokens  # generated tokens and tool results alike
        return max(1, min(MAX_BATCH, int(GPU_MEMORY_SHARE * free / (tokens * per_token))))


def _device_dtype() -> tuple[str, str]:
    """cuda and bf16 where a GPU is, else cpu and fp32 (CPU bf16 is slow, and fp32 batches exactly)."""
    import torch

    return ("cuda", "bf16") if torch.cuda.is_available() else ("cpu", "fp32")


def load_model_dir(path: Path) -> HFEngine:
    """A Hugging Face model directory, loaded for generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    device, _ = _device_dtype()
    dtype = "auto" if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval().to(device)
    return HFEngine(model, tokenizer, path)


def load_checkpoint(path: Path) -> HFEngine:
    """A training checkpoint (ZeRO shards or saved weights), consolidated in memory as `export` does."""
    import torch
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoTokenizer

    from ..checkpoint.export import consolidate, inspect_source

    source = inspect_source(path)  # the one scan's checks, then the config and the tokenizer
    device, dtype = _device_dtype()
    state = consolidate(source)
    # from_pretrained with a state dict (not export's meta-device build, whose rotary buffers stay empty):
    # transformers' own loading, tied embeddings and buffers included, nothing written to disk.
    model, info = MODEL_FOR_CAUSAL_LM_MAPPING[type(source.config)].from_pretrained(
        None,
        config=source.config,
        state_dict=state,
        dtype=torch.float32 if dtype == "fp32" else torch.bfloat16,
        output_loading_info=True,
    )
    del state
    if info["missing_keys"] or info["mismatched_keys"]:
        found = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
        raise UserError(
            f"{path}: the weights do not match config.json ({found[:3]}); check the run's config.json"
        )
    model.generation_config = _generation_config(source.path, source.tokenizer_dir, model.generation_config)
    return HFEngine(model.eval().to(device), AutoTokenizer.from_pretrained(str(source.tokenizer_dir)), path)


def _generation_config(path: Path, tokenizer_dir: Path, default: Any) -> Any:
    """generation_config.json of the checkpoint or its run, as export copies it; else the config's own."""
    from transformers import GenerationConfig

    for folder in (path, tokenizer_dir):
        if (folder / "generation_config.json").is_file():
            return GenerationConfig.from_pretrained(str(folder))
    return default
