"""Whether the model loads in vLLM, the engine of ARPO's rollouts; skipped where vLLM is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .rows import FAIL, PASS, SKIP, Check

NAME = "loads in vLLM"
# Room for ARPO's prompt and a few tokens: enough to prove the weights and tokenizer load, little memory.
MAX_MODEL_LEN = 2048


def vllm_check(path: Path, prompt: str) -> Check:
    """Load path in vLLM and generate a few tokens from `prompt`."""
    if importlib.util.find_spec("vllm") is None:
        return Check(NAME, SKIP, "vllm not installed: skipped", "run handoff again where the RL stage runs")
    try:
        from vllm import LLM, SamplingParams

        engine = LLM(
            model=str(path), max_model_len=MAX_MODEL_LEN, enforce_eager=True, gpu_memory_utilization=0.5
        )
        out = engine.generate([prompt], SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)
    except Exception as err:  # noqa: BLE001  (vLLM fails a load with many kinds of error; each is this row's)
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        return Check(
            NAME, FAIL, f"vLLM cannot load it: {type(err).__name__}: {reason}", "fix what vLLM names"
        )
    return Check(NAME, PASS, f"vLLM loaded it and generated {len(out[0].outputs[0].token_ids)} tokens")
