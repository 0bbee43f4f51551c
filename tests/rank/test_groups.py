"""After a ZeRO-3 universal resume each optimizer group gets its own saved settings back (DeepSpeed 0.19
copies the first group's into every group)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from arpo_train_sft.rank.groups import RestoreGroupSettings, saved_groups


def universal_copy(root: Path, groups: list[dict]) -> Path:
    zero = root / "global_step4_universal" / "zero"
    zero.mkdir(parents=True)
    torch.save({"param_groups": groups, "ds_version": "0.19.8"}, zero / "optimizer_state.pt")
    (root / "latest_universal").write_text("global_step4_universal")
    return root


def optimizer_as_deepspeed_left_it() -> torch.optim.Optimizer:
    decayed, kept = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    groups = [{"params": [decayed], "weight_decay": 0.01}, {"params": [kept], "weight_decay": 0.01}]
    return torch.optim.AdamW(groups, lr=1e-3)


def test_each_group_gets_its_saved_weight_decay_back(tmp_path: Path):
    saved = [
        {"weight_decay": 0.01, "lr": 0.5, "params": [0]},
        {"weight_decay": 0.0, "lr": 0.5, "params": [1]},
    ]
    resume = universal_copy(tmp_path, saved)
    optimizer = optimizer_as_deepspeed_left_it()
    args = SimpleNamespace(resume_from_checkpoint=str(resume))
    RestoreGroupSettings().on_train_begin(args, None, None, optimizer=optimizer)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]  # the scheduler's, not restored


def test_a_plain_checkpoint_or_no_resume_changes_nothing(tmp_path: Path):
    (tmp_path / "checkpoint-4").mkdir()
    for resume in (None, str(tmp_path / "checkpoint-4")):
        optimizer = optimizer_as_deepspeed_left_it()
        args = SimpleNamespace(resume_from_checkpoint=resume)
        RestoreGroupSettings().on_train_begin(args, None, None, optimizer=optimizer)
        assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.01]
    assert saved_groups(str(tmp_path / "checkpoint-4")) == []
