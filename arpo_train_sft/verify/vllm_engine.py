"""Greedy generation for verify with vLLM (`--engine vllm`), written against vLLM's documented offline API:
`LLM(model=...)`, `SamplingParams(temperature=0, max_tokens=..., stop=[...])`, `LLM.generate`.

vLLM is imported only here and only when asked for. Not yet run: vLLM is not installed where this was
written (README says what was tested)."""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import EnvironmentProblem
from .engine import OnDone, Row, chat_prompt
from .loop import STOP_TAGS, Limits

VLLM_BATCH = 256  # vLLM schedules its own batches within a call; this only caps one call's rows


def vllm_available() -> bool:
    """vLLM installed (found without importing it) and a CUDA GPU present."""
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def require_vllm() -> None:
    """One line and exit 3 where `--engine vllm` cannot run."""
    import torch

    if importlib.util.find_spec("vllm") is None:
        raise EnvironmentProblem(
            "--engine vllm: vLLM is not installed; `pip install vllm`, or pass --engine hf"
        )
    if not torch.cuda.is_available():
        raise EnvironmentProblem("--engine vllm: no CUDA GPU is visible; pass --engine hf to generate on CPU")


class VLLMEngine:
    """A vLLM LLM generating greedily; the stop tags end a row inside vLLM, the rest go on."""

    name = "vllm"

    def __init__(self, model_dir: Path) -> None:
        from vllm import LLM

        self.llm = LLM(model=str(model_dir), seed=0)
        self.tokenizer = self.llm.get_tokenizer()

    def prompt(self, question: str) -> str:
        """The text generation starts from for `question`."""
        return chat_prompt(self.tokenizer, question)

    def generate(self, rows: list[Row], on_done: OnDone) -> None:
        """Generate every row greedily and report each; vLLM returns them together at the end of the call."""
        from vllm import SamplingParams

        from .loop import Step

        params = [
            SamplingParams(
                temperature=0.0,
                max_tokens=r.max_new_tokens,
                stop=list(STOP_TAGS),
                include_stop_str_in_output=True,
                skip_special_tokens=True,
            )
            for r in rows
        ]
        outputs = self.llm.generate([r.text for r in rows], params, use_tqdm=False)
        for row, output in zip(rows, outputs, strict=True):
            done = output.outputs[0]
            # finish_reason "stop" with no stop_reason: an EOS token ended it, not one of the stop strings
            ended = done.finish_reason == "stop" and done.stop_reason is None
            on_done(row.key, Step(done.text, len(done.token_ids), ended))

    def default_batch_size(self, limits: Limits) -> int:
        """VLLM_BATCH: vLLM fits the rows of a call into GPU memory itself."""
        return VLLM_BATCH

    def close(self) -> None:
        """Free the GPU for the next checkpoint's engine."""
        import gc

        import torch

        del self.llm
        gc.collect()
        torch.cuda.empty_cache()


@contextlib.contextmanager
def vllm_for_checkpoint(checkpoint: Path) -> Iterator[Any]:
    """vLLM reads a model directory: export the checkpoint into a temporary one (never into the run)."""
    from ..checkpoint.export import export

    with tempfile.TemporaryDirectory(prefix="arpo-sft-verify-") as scratch:
        export(checkpoint, Path(scratch) / "model", dtype="bf16")
        engine = VLLMEngine(Path(scratch) / "model")
        try:
            yield engine
        finally:
            engine.close()
