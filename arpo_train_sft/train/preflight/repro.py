"""Reproduction guardrails: warn (never fail) where a config departs from ARPO's published SFT run."""

from __future__ import annotations

from ...arpo.recipe import ARPO_CUTOFF_LEN, ARPO_EPOCHS, ARPO_GLOBAL_BATCH, ARPO_LEARNING_RATE, ARPO_TEMPLATE
from ...config import batch_sizes, global_batch
from .rows import OK, WARN, Plan, Row

MASKING_TEMPLATE = "qwen_mask_results"
# ARPO's LLaMA-Factory pinned transformers<=4.52.4, whose TrainingArguments default this to false: each rank
# divides its token losses by its own label tokens, then the gradient all-reduce averages the ranks. The
# pinned transformers 5.5.4 defaults it to true (the token mean over the global batch).
LOSS_KEY = "average_tokens_across_devices"
ARPO_LOSS_VALUE = False


def departures(values: dict, world_size: int) -> list[tuple[str, str]]:
    """(what departs, why it matters) for each result-changing setting that differs from ARPO's run."""
    found = []
    batch = global_batch(values, world_size)
    if batch is not None and batch != ARPO_GLOBAL_BATCH:
        per_device, accumulation = batch_sizes(values)
        found.append(
            (
                f"global batch {batch} = {per_device} per device x {accumulation} accumulation x {world_size} ranks",
                f"ARPO used {ARPO_GLOBAL_BATCH}; another batch changes the number and size of steps, so the fit",
            )
        )
    lr = values.get("learning_rate", 5e-5)
    if lr != ARPO_LEARNING_RATE:
        found.append((f"learning_rate {lr}", f"ARPO used {ARPO_LEARNING_RATE:g}"))
    if isinstance(values.get("max_steps"), int) and values["max_steps"] > 0:
        found.append((f"max_steps {values['max_steps']}", f"ARPO trained {ARPO_EPOCHS:g} full epochs"))
    elif values.get("num_train_epochs", 3.0) != ARPO_EPOCHS:
        found.append((f"num_train_epochs {values.get('num_train_epochs')}", f"ARPO used {ARPO_EPOCHS:g}"))
    cutoff = values.get("cutoff_len", 2048)
    if cutoff != ARPO_CUTOFF_LEN:
        found.append(
            (f"cutoff_len {cutoff}", f"ARPO used {ARPO_CUTOFF_LEN}; rows are cut at a different length")
        )
    found += loss_departures(values)
    template = values.get("template")
    if template == MASKING_TEMPLATE:
        found.append(
            (
                f"template {template}: masking on",
                "ARPO trained on tool results too (template qwen, no masking)",
            )
        )
    elif template != ARPO_TEMPLATE:
        found.append((f"template {template}", f"ARPO used {ARPO_TEMPLATE}"))
    return found


def loss_departures(values: dict) -> list[tuple[str, str]]:
    """The loss formula's departures: the token normalisation, and Liger's fused loss."""
    found = []
    if values.get(LOSS_KEY, True) is not ARPO_LOSS_VALUE:
        shown = (
            f"{LOSS_KEY} {values[LOSS_KEY]}"
            if LOSS_KEY in values
            else f"{LOSS_KEY} unset (true in transformers 5)"
        )
        found.append(
            (
                f"{shown}: the loss is the token mean over the whole global batch",
                f"ARPO's transformers 4.52.4 defaulted to false (each rank's token mean, then the mean over ranks); "
                f"set {LOSS_KEY}: false to train ARPO's loss",
            )
        )
    if values.get("enable_liger_kernel") is True:
        found.append(
            (
                "enable_liger_kernel true: Liger's fused linear + cross-entropy loss",
                "ARPO trained the unfused loss. Liger divides the summed token loss by the same token count the "
                "Trainer passes, so the formula is the same; its values differ within bf16 rounding (bash "
                "bench/gpu_check.sh compares the first loss with it on and off)",
            )
        )
    return found


def check_reproduction(plan: Plan) -> list[Row]:
    """One warning row per departure from ARPO's published run, or one ok row."""
    from .environment import world_size

    found = departures(plan.cfg.values, world_size(plan))
    if not found:
        return [
            Row("ARPO run", OK, "global batch, learning rate, epochs, cutoff, template and loss match ARPO")
        ]
    return [Row("ARPO run", WARN, what, why) for what, why in found]
