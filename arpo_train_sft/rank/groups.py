"""After a resume from a universal checkpoint under ZeRO-3: give each optimizer group its own settings back.

DeepSpeed 0.19's ZeRO-3 universal loader copies the first saved parameter group's settings into every
group. The Trainer makes two groups, weights with `weight_decay` and biases and norms without, so after
such a resume the biases and norms would be decayed too (the 7B quality preset sets weight_decay 0.01).
The universal copy keeps every group's settings (zero/optimizer_state.pt's param_groups); this callback
puts each group's back before the first step. Attached by `arpo_train_sft.entry`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

# Settings DeepSpeed overwrote; the learning rate is the scheduler's, set at every step anyway.
_RESTORED = ("weight_decay",)


class RestoreGroupSettings(TrainerCallback):
    """Each optimizer group's saved settings, read from the universal copy the run resumed from."""

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        saved = saved_groups(args.resume_from_checkpoint)
        if optimizer is None or not saved:
            return control
        for group, settings in zip(optimizer.param_groups, saved, strict=False):
            for key in _RESTORED:
                if key in settings:
                    group[key] = settings[key]
        return control


def saved_groups(resume_from: str | None) -> list[dict]:
    """The param groups a universal copy saved, or [] when `resume_from` is not one."""
    if not resume_from or not (Path(resume_from) / "latest_universal").is_file():
        return []
    import torch

    files = sorted(Path(resume_from).glob("global_step*_universal/zero/optimizer_state.pt"))
    if not files:
        return []
    state = torch.load(files[0], map_location="cpu", weights_only=False)
    groups = state.get("param_groups") if isinstance(state, dict) else None
    return [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []
