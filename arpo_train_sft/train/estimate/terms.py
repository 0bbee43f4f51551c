"""The memory estimate's terms: what one rank holds at its peak, each with its formula and its source.

Every term is in bytes per rank; P is the parameter count, N the number of ranks, T = micro-batch x
cutoff_len the tokens of one micro-batch (the worst case: every row at least cutoff_len long), e the
bytes of one activation element (2 under bf16/fp16, 4 in fp32). The terms are summed, which errs high:
under gradient checkpointing the recomputed layer and the logits are not alive at the same moment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ...config import RunConfig
from ...errors import UserError
from ...family import ModelShape
from ..shapes import model_shape
from ..values import Bound, config_int, json_number

GIB = 1024**3
# transformers' TrainingArguments default, and LLaMA-Factory's cutoff_len default, for configs without them.
DEFAULT_MICRO_BATCH = 8
DEFAULT_CUTOFF = 2048
# CUDA context (~0.5 GiB) plus NCCL's and DeepSpeed's communication buffers: memory a GPU loses that
# torch.cuda.max_memory_allocated never reports. Not measured on this project's GPU yet; an upper guess.
CUDA_FIXED_GIB = 1.0
# The caching allocator rounds blocks up and leaves holes between long-lived and per-step tensors.
FRAGMENTATION = 0.05
# What each rank process holds in host RAM besides offloaded states (Python, torch, CUDA host libraries,
# the tokenized dataset). A guess, as above; offloaded states dominate the host figure.
HOST_PER_RANK_GIB = 3.0
GPUS_PER_NODE = 8
DS_MAX_LIVE = 1_000_000_000  # DeepSpeed's default stage3_max_live_parameters (the shipped JSONs set it too)
# The DeepSpeed numbers the estimate reads: (key, DeepSpeed's default, accepted range).
_DS_NUMBERS = (
    ("stage", 0, Bound(0, 3)),
    ("reduce_bucket_size", 500_000_000, Bound(1, 10**15)),
    ("stage3_max_live_parameters", DS_MAX_LIVE, Bound(0, 10**15)),
)


@dataclass(frozen=True)
class Setup:
    """Everything the estimate depends on, read from a config (and changed by the advice)."""

    shape: ModelShape
    micro_batch: int
    accumulation: int
    cutoff: int
    elem_bytes: int  # e: 2 under bf16/fp16, 4 in fp32
    deepspeed: str  # the JSON's path, "" for plain DDP
    stage: int
    offload_optimizer: bool
    offload_param: bool
    reduce_bucket: int | None  # elements; None is DeepSpeed's "auto" (HF sets hidden x hidden)
    max_live: int  # ZeRO-3's stage3_max_live_parameters: gathered weights it may keep between uses
    checkpointing: bool
    liger: bool
    attention: str  # "fa2", "sdpa" or "eager"

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.cutoff


def read_setup(cfg: RunConfig) -> Setup:
    """The estimate's inputs from the merged config values and its DeepSpeed JSON."""
    values = cfg.values
    problems, ints = [], {}
    for key, default in (
        ("per_device_train_batch_size", DEFAULT_MICRO_BATCH),
        ("gradient_accumulation_steps", 1),
        ("cutoff_len", DEFAULT_CUTOFF),
    ):
        try:
            ints[key] = config_int(key, values.get(key), default)
        except UserError as err:
            problems += [f"{cfg.path}: {line}" for line in err.problems]
    ds_path = str(values.get("deepspeed") or "")
    zero = _zero_config(cfg.path, ds_path) if ds_path else {}
    numbers = {}
    for key, default, bound in _DS_NUMBERS:
        value = zero.get(key, default)
        try:
            numbers[key] = (
                None if value == "auto" else json_number(f"{ds_path}: zero_optimization.{key}", value, bound)
            )
        except UserError as err:
            problems += err.problems
    if problems:
        raise UserError(problems)
    flash = str(values.get("flash_attn", "auto"))
    return Setup(
        shape=model_shape(str(values.get("model_name_or_path", ""))),
        micro_batch=ints["per_device_train_batch_size"],
        accumulation=ints["gradient_accumulation_steps"],
        cutoff=ints["cutoff_len"],
        elem_bytes=2 if any(values.get(k) for k in ("bf16", "pure_bf16", "fp16")) else 4,
        deepspeed=ds_path,
        stage=numbers["stage"] or 0,
        offload_optimizer=_offloaded(zero, "offload_optimizer"),
        offload_param=_offloaded(zero, "offload_param"),
        reduce_bucket=numbers["reduce_bucket_size"],
        max_live=numbers["stage3_max_live_parameters"] or DS_MAX_LIVE,
        checkpointing=not values.get("disable_gradient_checkpointing", False),
        liger=bool(values.get("enable_liger_kernel", False)),
        # LLaMA-Factory's "auto" lets transformers choose, which is sdpa; "disabled" is the eager path.
        attention="fa2" if flash in ("fa2", "fa3") else "eager" if flash == "disabled" else "sdpa",
    )


def _zero_config(config_path: Path, ds_path: str) -> dict:
    path = Path(ds_path)
    try:
        zero = json.loads(path.read_text(encoding="utf-8")).get("zero_optimization", {})
    except (OSError, ValueError, RecursionError, AttributeError) as err:
        raise UserError(
            f"{config_path}: deepspeed config {path} cannot be read ({err}); fix the path"
        ) from None
    return zero if isinstance(zero, dict) else {}


def _offloaded(zero: dict, key: str) -> bool:
    section = zero.get(key) or {}
    return isinstance(section, dict) and str(section.get("device", "none")) in ("cpu", "nvme")


def layer_activation_bytes(s: Setup) -> float:
    """Bytes autograd keeps per token for one decoder layer's backward (Qwen2 as transformers writes it)."""
    h, kv, i, e = s.shape.hidden, s.shape.kv_dim, s.shape.intermediate, s.elem_bytes
    # RMSNorm, twice per layer. transformers' saves its input upcast to fp32 (4h: a copy under bf16, the
    # input itself in fp32) and the normalised e-byte tensor it scales; its output is saved by the next
    # projections (e*h). Liger's fused kernel saves only its input and the output.
    norms = 2 * (2 * e * h if s.liger else 4 * h + 2 * e * h)
    # RoPE'd q and k, v, and the attention output (FA2 and sdpa's kernels save out + logsumexp, not the
    # s x s matrix); projection inputs are the norm outputs above. RoPE saves only cos/sin (shared).
    attention = e * (2 * h + 2 * kv)
    if s.attention != "fa2":
        # sdpa's output is transposed back into a contiguous copy that o_proj saves; with a padding mask
        # (micro-batch > 1) transformers also repeats k and v to every head before calling it.
        attention += e * h + (2 * e * (h - kv) if s.micro_batch > 1 else 0)
    if s.attention == "eager":
        # The softmax keeps the s x s probabilities per head, upcast to fp32 and cast back.
        attention += s.shape.heads * s.cutoff * (4 + e)
    # SwiGLU: gate, silu(gate), up and their product (down_proj's input), each i wide; Liger's fused
    # SiLU-mul saves gate and up and recomputes silu.
    mlp = (3 if s.liger else 4) * e * i
    return norms + attention + mlp


def activation_bytes(s: Setup) -> float:
    """Stored activations: every layer's, or under checkpointing each layer's input plus one recomputed layer."""
    h, e, layers = s.shape.hidden, s.elem_bytes, s.shape.layers
    per_layer = layer_activation_bytes(s)
    stored = layers * e * h + per_layer if s.checkpointing else layers * per_layer
    final_norm = 2 * e * h if s.liger else 4 * h + 2 * e * h  # outside the checkpointed layers
    mask = s.micro_batch * s.cutoff**2 if s.attention != "fa2" and s.micro_batch > 1 else 0  # bool 4-D mask
    return s.tokens * (stored + final_norm) + mask


def logits_bytes(s: Setup) -> float:
    """The lm_head output and the cross-entropy over it, at its peak in the backward."""
    v, h, e = s.shape.vocab, s.shape.hidden, s.elem_bytes
    if not s.liger:
        # e-byte logits, their fp32 upcast (none in fp32), the log-softmax output and its gradient, all
        # T x vocab: 2+4+4+4 = 14 bytes a logit under bf16. Calibrated on the H200 (BENCHMARKS.md): 29.87
        # GiB measured at 15,000 tokens x 151,936, this formula gives 29.72 (-0.5 %).
        return s.tokens * v * (e + (4 if e != 4 else 0) + 4 + 4)
    # Liger's fused linear cross-entropy works on chunks of about T x hidden logits (chunk rows: T divided
    # by ceil(vocab / hidden), rounded up to a power of two), whose gradient it writes in place, and keeps
    # the gradient of the hidden states (T x hidden). On the H200 it peaked at 0.16 GiB at 15,000 tokens,
    # mostly the tiny model itself, so this term is only checked as a floor there.
    rows = 2 ** math.ceil(math.log2(max(1, math.ceil(s.tokens / math.ceil(v / h)))))
    return 2 * rows * v * e + s.tokens * h * e


def state_bytes(s: Setup, gpus: int) -> dict[str, float]:
    """Parameters, gradients and optimizer states on one GPU for the config's ZeRO stage and offload."""
    p, e = s.shape.params(), s.elem_bytes
    if not s.deepspeed:
        # Plain DDP: LLaMA-Factory casts trainable weights to fp32 (autocast computes in bf16); fp32
        # gradients; Adam's m and v. Nothing is partitioned.
        return {"parameters": 4 * p, "gradients": 4 * p, "optimizer": 8 * p}
    largest = s.shape.largest_module_params()
    shard = gpus if s.stage >= 1 else 1
    # DeepSpeed keeps e-byte weights for compute and an fp32 master copy (cloned even in fp32) plus Adam's
    # m and v: 4+4+4 bytes a parameter, partitioned from ZeRO-1 on, on the host when offloaded.
    optimizer = 0 if s.offload_optimizer else 12 * p / shard
    bucket = s.reduce_bucket if s.reduce_bucket is not None else s.shape.hidden**2
    if s.stage <= 1:
        # ZeRO-0/1: whole gradients; DeepSpeed's bf16 optimizer also accumulates them in fp32 at stage 0.
        gradients = e * p + (4 * p if s.stage == 0 and e != 4 else 0)
        return {"parameters": e * p, "gradients": gradients, "optimizer": optimizer}
    if s.stage == 2:
        # This rank's gradient partition, plus the contiguous bucket gradients are reduced through.
        own = 0 if s.offload_optimizer else e * p / gpus
        return {"parameters": e * p, "gradients": own + e * min(bucket, p), "optimizer": optimizer}
    # ZeRO-3: this rank's partition of weights (on the host under offload_param) plus the gathered ones.
    # With a large stage3_max_reuse_distance, gathered weights stay until stage3_max_live_parameters are
    # resident (measured on CPU: the whole small test model stays gathered after the first step), and
    # a module is always gathered whole. Gradients: the partition plus the largest module's full
    # gradient before it is reduce-scattered, plus the reduce bucket.
    gathered = max(largest, min(s.max_live, p))
    own_params = 0 if s.offload_param else e * p / gpus
    own_grads = 0 if s.offload_optimizer else e * p / gpus
    return {
        "parameters": own_params + e * gathered,
        "gradients": own_grads + e * largest + e * min(bucket, p),
        "optimizer": optimizer,
    }


def host_bytes(s: Setup, gpus: int) -> float:
    """Host RAM of one node: offloaded states (fp32 master, Adam m and v, fp32 gradients; weights) + ranks."""
    p, ranks = s.shape.params(), min(gpus, GPUS_PER_NODE)
    offloaded = (16 * p if s.offload_optimizer else 0) + (s.elem_bytes * p if s.offload_param else 0)
    return offloaded * ranks / gpus + ranks * HOST_PER_RANK_GIB * GIB


def per_gpu_bytes(s: Setup, gpus: int) -> dict[str, float]:
    """Every term for one GPU, overhead last."""
    terms = state_bytes(s, gpus) | {"activations": activation_bytes(s), "logits": logits_bytes(s)}
    terms["overhead"] = CUDA_FIXED_GIB * GIB + FRAGMENTATION * sum(terms.values())
    return terms
