"""ARPO's published cold-start SFT run (its sft_config.yaml on 8 GPUs): the values that change results.

Below both the launcher (preflight's departure warnings) and what a run leaves (the divergence line).
"""

from __future__ import annotations

ARPO_GLOBAL_BATCH = 16  # 1 per GPU x 2 accumulation x 8 GPUs
ARPO_LEARNING_RATE = 7.0e-6
ARPO_EPOCHS = 3.0
ARPO_CUTOFF_LEN = 15000
ARPO_TEMPLATE = "qwen"
