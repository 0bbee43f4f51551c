"""A step whose raw loss or gradient norm is not finite stops every rank in on_step_end, before any save."""

from __future__ import annotations

import inspect
import json
import math
import signal

import datasets
import pytest
import torch
from accelerate.utils.deepspeed import DeepSpeedOptimizerWrapper
from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
from transformers import PretrainedConfig, Trainer, TrainerControl, TrainerState, TrainingArguments
from transformers.modeling_outputs import CausalLMOutput

from arpo_train_sft.checkpoint import diverged, stopped
from arpo_train_sft.rank.health import NORMED, StopOnNonFinite, code, grad_norm
from arpo_train_sft.rank.preempt import SaveOnSigterm


class Tiny(torch.nn.Module):
    """A model whose loss is `scale` times a weight; `poison` makes its n-th training forward nan."""

    def __init__(self, poison: int = 0) -> None:
        super().__init__()
        self.config = PretrainedConfig()
        self.config._attn_implementation = "sdpa"
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.poison, self.calls = poison, 0

    def forward(self, input_ids, attention_mask=None, labels=None, scale=1.0):
        self.calls += self.training
        bad = self.training and self.calls == self.poison
        return CausalLMOutput(
            loss=(self.weight * input_ids.float().mean() * scale).sum() * (math.nan if bad else 1)
        )


@pytest.fixture
def health():
    previous = signal.getsignal(signal.SIGTERM)
    watch = StopOnNonFinite()
    yield watch, SaveOnSigterm(watch)
    signal.signal(signal.SIGTERM, previous)


def _args(tmp_path, **extra) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **extra)


def _forward(model: Tiny, ids: list[int], pad: int = 0, scale: float = 1.0) -> None:
    input_ids = torch.tensor([ids + [0] * pad])
    model(input_ids=input_ids, attention_mask=torch.tensor([[1] * len(ids) + [0] * pad]), scale=scale)


def _optimizer(norm: float) -> DeepSpeedOptimizerWrapper:
    """accelerate's wrapper around a DeepSpeed bf16 optimizer that just measured `norm`, as callbacks get it."""
    inner = object.__new__(BF16_Optimizer)
    inner._global_grad_norm = norm
    wrapper = object.__new__(DeepSpeedOptimizerWrapper)
    wrapper.optimizer = inner
    return wrapper


def test_codes_tell_finite_from_each_kind_of_not():
    values = [1.0, -math.inf, math.inf, math.nan]
    assert [code(torch.tensor(v)).item() for v in values] == [0, 1, 2, 3]
    assert code(torch.tensor([1.0, math.inf, math.nan])).item() == 3  # nan outranks inf


def test_the_gradient_norm_is_read_only_from_deepspeed_optimizers_that_keep_one():
    assert grad_norm(_optimizer(2.5)) == 2.5
    assert grad_norm(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1)) is None
    for cls in NORMED:  # an upgrade that renames the attribute fails here, not silently in a run
        assert "self._global_grad_norm =" in inspect.getsource(cls), cls


def test_a_finite_step_changes_nothing_and_eval_forwards_are_not_watched(health, tmp_path):
    watch, callback = health
    model, args, state, control = Tiny(), _args(tmp_path), TrainerState(global_step=2), TrainerControl()
    watch.on_train_begin(args, state, control, model=model)
    _forward(model, [1, 2])
    model.eval()
    _forward(model, [1, 2], scale=math.nan)
    callback.on_step_end(args, state, control, model=model, optimizer=_optimizer(3.0))
    assert not control.should_save and not (tmp_path / diverged.NOTE).exists()
    assert len(watch.batches) == 1


def test_a_nan_loss_stops_before_the_save_and_leaves_the_note(health, tmp_path, capsys):
    watch, callback = health
    model, args, state = Tiny(), _args(tmp_path), TrainerState(global_step=3, is_world_process_zero=True)
    control = TrainerControl(should_save=True)  # a save step, as DefaultFlowCallback marks it
    watch.on_train_begin(args, state, control, model=model)
    watch.on_step_begin(args, state, control)
    _forward(model, [1, 2], scale=math.nan)
    with pytest.raises(SystemExit) as exit_:
        callback.on_step_end(args, state, control, model=model, optimizer=_optimizer(1.0))
    assert exit_.value.code == 0
    note = json.loads((tmp_path / diverged.NOTE).read_text())
    assert (note["step"], note["loss"], note["grad_norm"], note["checkpoint"]) == (3, "nan", None, None)
    facts = {"learning_rate": 5e-5, "attention": "sdpa", "deepspeed": False, "fp16": False, "row": None}
    assert note["facts"] == facts
    assert "step 3 not finite (loss nan, grad_norm finite)" in capsys.readouterr().out


def test_an_infinite_gradient_norm_stops_but_not_under_fp16_loss_scaling(health, tmp_path):
    watch, callback = health
    model, state, control = Tiny(), TrainerState(global_step=7, is_world_process_zero=True), TrainerControl()
    watch.on_train_begin(_args(tmp_path), state, control, model=model)
    _forward(model, [1, 2])
    watch.batches[0].code = code(torch.tensor(1.0))
    fp16 = _args(tmp_path)
    fp16.fp16 = True  # set after init: fp16 on CPU is refused by TrainingArguments itself
    callback.on_step_end(fp16, state, control, model=model, optimizer=_optimizer(math.inf))
    assert not (tmp_path / diverged.NOTE).exists()
    with pytest.raises(SystemExit):
        callback.on_step_end(_args(tmp_path), state, control, model=model, optimizer=_optimizer(math.inf))
    note = json.loads((tmp_path / diverged.NOTE).read_text())
    assert (note["step"], note["loss"], note["grad_norm"]) == (7, None, "inf")


def test_divergence_outranks_a_sigterm_in_the_same_step(health, tmp_path):
    watch, callback = health
    model, args, state = Tiny(), _args(tmp_path), TrainerState(global_step=4, is_world_process_zero=True)
    control = TrainerControl()
    watch.on_train_begin(args, state, control, model=model)
    _forward(model, [1], scale=math.inf)
    callback.requested = True
    with pytest.raises(SystemExit):
        callback.on_step_end(args, state, control, model=model)
    assert not control.should_save and not (tmp_path / stopped.NOTE).exists()
    assert json.loads((tmp_path / diverged.NOTE).read_text())["loss"] == "inf"


def test_the_row_is_named_when_one_micro_batch_alone_went_bad(health, tmp_path):
    watch, callback = health
    rows = datasets.Dataset.from_dict({"input_ids": [[5, 6, 7], [1, 2], [3, 4]]})
    loader = torch.utils.data.DataLoader(rows)
    model, args, state = Tiny(), _args(tmp_path), TrainerState(global_step=9, is_world_process_zero=True)
    watch.on_train_begin(args, state, TrainerControl(), model=model)
    _forward(model, [5, 6, 7])
    _forward(model, [3, 4], pad=6, scale=math.nan)  # padded to a multiple of 8, as the collator does
    with pytest.raises(SystemExit):
        callback.on_step_end(args, state, TrainerControl(), model=model, train_dataloader=loader)
    assert json.loads((tmp_path / diverged.NOTE).read_text())["facts"]["row"] == 2

    watch.on_step_begin(args, state, TrainerControl())
    _forward(model, [5, 6, 7], scale=math.nan)
    _forward(model, [3, 4], scale=math.nan)  # every micro-batch bad: the weights, not a row
    with pytest.raises(SystemExit):
        callback.on_step_end(args, state, TrainerControl(), model=model, train_dataloader=loader)
    assert json.loads((tmp_path / diverged.NOTE).read_text())["facts"]["row"] is None


def test_the_real_trainer_saves_nothing_from_the_diverged_step_on(health, tmp_path):
    """transformers' own loop: on_step_end runs before `_maybe_log_save_evaluate`, so checkpoint-3 never exists."""
    watch, callback = health
    data = [{"input_ids": torch.tensor([i + 1, i + 2])} for i in range(8)]
    args = _args(tmp_path, max_steps=6, save_steps=1, per_device_train_batch_size=1, logging_steps=1)
    trainer = Trainer(model=Tiny(poison=3), args=args, train_dataset=data, callbacks=[watch, callback])
    with pytest.raises(SystemExit):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not (tmp_path / "model.safetensors").exists()
    note = json.loads((tmp_path / diverged.NOTE).read_text())
    assert (note["step"], note["loss"], note["checkpoint"]) == (3, "nan", str(tmp_path / "checkpoint-2"))
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(math.isfinite(v) for v in logged)
