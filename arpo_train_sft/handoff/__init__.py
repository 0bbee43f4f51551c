"""`arpo-sft handoff`: checks that an exported SFT model behaves in ARPO's RL rollout as it did in training."""
