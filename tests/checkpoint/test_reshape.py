"""A relaunch on another world size or ZeRO layout: the accumulation that keeps the global batch, when
DeepSpeed must convert, and the refusals (every one names what would work)."""

from __future__ import annotations

import pytest

from arpo_train_sft.checkpoint.layout import Layout
from arpo_train_sft.checkpoint.reshape import plan_reshape
from arpo_train_sft.errors import UserError


def layout(
    world: int,
    stage: int | None = 3,
    offload: bool = False,
    micro: int = 2,
    accumulation: int = 1,
    round_robin: bool = False,
):
    return Layout(world, stage, offload, micro, accumulation, round_robin)


def test_the_same_layout_loads_as_saved():
    assert plan_reshape(layout(2), layout(2), "ckpt") is None
    assert plan_reshape(layout(2, stage=1), layout(2, stage=2), "ckpt") is None  # alike on disk
    # Without a world change the config's batch keys rule, as in any relaunch.
    assert plan_reshape(layout(2), layout(2, micro=1, accumulation=4), "ckpt") is None


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_ranks_to_one_doubles_the_accumulation_and_converts(stage: int):
    reshape = plan_reshape(layout(2, stage), layout(1, stage), "ckpt")
    assert reshape.convert and reshape.planned == layout(1, stage, accumulation=2)
    assert reshape.lines() == [
        f"saved on 2 ranks, ZeRO-{stage}, global batch 4 (2 x 1 per rank); relaunching on 1 rank, "
        f"ZeRO-{stage}, global batch 4 (2 x 2 per rank)",
        "global batch kept at 4: gradient_accumulation_steps 1 -> 2 (2 -> 1 ranks, 2 per micro-batch)",
        "DeepSpeed's partitions do not fit the new layout: converting to a universal checkpoint",
    ]


def test_eight_ranks_to_sixteen_halves_it_with_the_configs_own_micro_batch():
    reshape = plan_reshape(layout(8, micro=1, accumulation=16), layout(16, micro=2, accumulation=16), "c")
    assert reshape.planned.accumulation == 4 and reshape.planned.global_batch == 128


@pytest.mark.parametrize("offload", [True, False])
def test_an_offload_change_alone_converts_and_is_said(offload: bool):
    reshape = plan_reshape(layout(2, offload=not offload), layout(2, offload=offload), "ckpt")
    assert reshape.convert and reshape.planned.accumulation == 1
    assert reshape.lines()[0] == (
        f"saved on 2 ranks, {reshape.saved.zero}, global batch 4 (2 x 1 per rank); relaunching on 2 ranks, "
        f"{reshape.planned.zero}, global batch 4 (2 x 1 per rank)"
    )
    assert len(reshape.lines()) == 2  # no accumulation line: nothing to rescale


def test_zero0_and_plain_ddp_change_world_size_without_converting():
    assert not plan_reshape(layout(2, stage=0), layout(4, stage=0, micro=1), "c").convert
    reshape = plan_reshape(layout(1, stage=None, accumulation=4), layout(2, stage=None), "c")
    assert not reshape.convert and reshape.planned.accumulation == 2


def test_a_global_batch_the_new_world_cannot_hold_names_the_world_sizes_that_can():
    with pytest.raises(UserError) as err:
        plan_reshape(layout(2, accumulation=3), layout(5), "out/checkpoint-8")
    assert err.value.problems == [
        "out/checkpoint-8: its global batch 12 (2 ranks x 2 x 3) cannot be kept on 5 ranks with "
        "per_device_train_batch_size=2: 12 is not a multiple of 5; launch on a world size that divides it "
        "(1, 2, 3, 4, 6, 12 ranks in all: NPROC_PER_NODE x NNODES)"
    ]


def test_a_micro_batch_that_does_not_divide_names_the_ones_that_do():
    with pytest.raises(UserError) as err:
        plan_reshape(layout(2, micro=1, accumulation=3), layout(3, micro=4), "ckpt")
    assert err.value.problems == [
        "ckpt: its global batch 6 (2 ranks x 1 x 3) cannot be kept on 3 ranks with "
        "per_device_train_batch_size=4: set one of per_device_train_batch_size=1, "
        "per_device_train_batch_size=2 (the accumulation follows)"
    ]


@pytest.mark.parametrize(
    ("saved", "planned", "says"),
    [
        (layout(2, stage=0), layout(2, stage=3), "converts only ZeRO-1, 2 and 3"),
        (layout(2, stage=3), layout(1, stage=0), "converts only ZeRO-1, 2 and 3"),
        (layout(2, stage=None), layout(2, stage=3), "with DeepSpeed on both sides or on neither"),
    ],
)
def test_a_stage_deepspeed_cannot_convert_is_refused(saved: Layout, planned: Layout, says: str):
    with pytest.raises(UserError) as err:
        plan_reshape(saved, planned, "ckpt")
    (line,) = err.value.problems
    assert line.startswith(f"ckpt: saved with {saved.zero}, relaunched with {planned.zero}") and says in line


@pytest.mark.parametrize(("saved", "planned"), [(2, 3), (3, 1), (3, 2)])
def test_a_change_between_zero_1_2_and_3_converts(saved: int, planned: int):
    reshape = plan_reshape(layout(2, stage=saved), layout(2, stage=planned, offload=True), "ckpt")
    assert reshape.convert and reshape.planned.stage == planned


def test_a_round_robin_zero2_checkpoint_of_several_ranks_is_refused_and_one_rank_is_not():
    saved = Layout(2, 2, False, 2, 1, round_robin=True)
    with pytest.raises(UserError) as err:
        plan_reshape(saved, layout(1, stage=2), "out/checkpoint-4")
    assert err.value.problems == [
        "out/checkpoint-4: saved under ZeRO-2 with round_robin_gradients on 2 ranks, whose parameters "
        "DeepSpeed 0.19's universal conversion mislabels (measured: 24 of 26 wrong in a 2-rank demo "
        "checkpoint); relaunch on 2 ranks with ZeRO-2 to resume it as saved (the shipped ZeRO-2 configs now "
        "set round_robin_gradients false, whose checkpoints convert)"
    ]
    assert plan_reshape(saved, layout(2, stage=2, round_robin=True), "c") is None  # loads as saved
    one_rank = Layout(1, 2, False, 2, 2, round_robin=True)  # one partition: nothing to reorder
    assert plan_reshape(one_rank, layout(2, stage=2), "c").convert
