"""`template: qwen_mask_results` gives the same input_ids as `template: qwen`; only result labels differ.

Both templates run through LLaMA-Factory's own processors (plain and packed) under every flag its labelling
loop handles (cutoff truncation, `mask_history`, `train_on_prompt`, `packing`, `neat_packing`), and the
labels must equal `qwen`'s except at exactly the result tokens an independent oracle finds in the bytes.
"""

from __future__ import annotations

import copy

import pytest

import arpo_train_sft
from arpo_train_sft.arpo.tags import find_result_spans
from arpo_train_sft.lf.masking import TEMPLATE_NAME

from .result_tokens import result_tokens
from .rows import IGNORE, assistant_messages, demo_rows, encode, row


@pytest.fixture(scope="module")
def tokenizer(qwen_tokenizer):
    arpo_train_sft.register()
    return copy.deepcopy(qwen_tokenizer)  # LLaMA-Factory's template fix adds tokens to the one it is given


def masked_text(tokenizer, example: dict) -> str:
    ids = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label == IGNORE]
    return tokenizer.decode(ids)


def trained_text(tokenizer, example: dict) -> str:
    return tokenizer.decode([label for label in example["labels"] if label != IGNORE])


def assert_qwen_minus_result_spans(tokenizer, rows, **data_args) -> tuple[list[dict], list[dict], int, int]:
    """Both templates through LLaMA-Factory's processor with these DataArguments: everything equal but the
    labels, and those equal except at exactly the result tokens the oracle finds, which are IGNORE_INDEX.

    Returns (plain, masked, result tokens qwen trains and qwen_mask_results hides, segments cut in a span).
    """
    plain = encode(tokenizer, rows, "qwen", **dict(data_args))
    masked = encode(tokenizer, rows, TEMPLATE_NAME, **dict(data_args))
    assert len(masked) == len(plain)
    hidden = cuts = 0
    for p, m in zip(plain, masked, strict=True):
        assert {k: v for k, v in m.items() if k != "labels"} == {k: v for k, v in p.items() if k != "labels"}
        found = result_tokens(tokenizer, p["input_ids"], assistant_messages(rows))
        expected = [IGNORE if i in found.positions else label for i, label in enumerate(p["labels"])]
        assert m["labels"] == expected
        hidden += sum(p["labels"][i] != IGNORE for i in found.positions)
        cuts += found.cut_inside_span
    return plain, masked, hidden, cuts


def test_bundled_data_identical_ids_and_every_result_masked(tokenizer):
    rows = demo_rows()
    _, masked, hidden, _ = assert_qwen_minus_result_spans(tokenizer, rows)
    assert hidden > 0
    with_results = 0
    for source, m in zip(rows, masked, strict=True):
        answer = source["response"][0]["content"]
        trained = trained_text(tokenizer, m)
        assert "<result>" not in trained and "</result>" not in trained
        assert trained.endswith("<|im_end|>\n")
        if "<result>" in answer:
            with_results += 1
            for start, end in find_result_spans(answer).spans:
                assert answer[start:end] in masked_text(tokenizer, m)
    assert with_results > len(rows) // 2


@pytest.mark.parametrize(
    ("answer", "trained"),
    [
        # Qwen's BPE merges `><` across tags: that token is trained when its `>` is the model's
        # (closing `</python>`), and masked when its `>` is the tool loop's (closing `</result>`).
        ("<result>\n42\n</result><answer>\\boxed{42}</answer>", "answer>\\boxed{42}</answer>"),
        ("<python>print(42)</python><result>\n42\n</result>", "<python>print(42)</python><"),
        (
            "<python>print(1)</python><result>1</result><think>again</think>"
            "<search>q</search>\n<result>Page 1: 2</result><answer>3</answer>",
            "<python>print(1)</python><think>again</think><search>q</search>\nanswer>3</answer>",
        ),
        (
            "<python>print('<result>é</result>')</python><result>\né\n</result>ok",
            "<python>print('<result>é</result>')</python><ok",
        ),
        (
            "<python>x = '数学 🚀'\nprint(x)</python><result>数学 🚀</result>✓",
            "<python>x = '数学 🚀'\nprint(x)</python><✓",
        ),
    ],
    ids=["start-of-turn", "end-of-turn", "several", "result-text-inside-code", "unicode"],
)
def test_edge_cases_keep_ids_and_mask_exactly_the_spans(tokenizer, answer: str, trained: str):
    _, (masked,), _, _ = assert_qwen_minus_result_spans(tokenizer, [row(answer)])
    assert trained_text(tokenizer, masked) == trained + "<|im_end|>\n"


@pytest.mark.parametrize(
    "answer",
    [
        "<python>1</python><result>never closed",
        "stray </result> here<answer>1</answer>",
        "<python>1</python><result>a<result>b</result></result>",
    ],
    ids=["unclosed", "stray-close", "nested"],
)
def test_unbalanced_rows_are_trained_exactly_like_qwen(tokenizer, answer: str, caplog):
    plain = encode(tokenizer, [row(answer)], "qwen")
    with caplog.at_level("WARNING", logger="arpo_train_sft.lf.masking"):
        masked = encode(tokenizer, [row(answer)], TEMPLATE_NAME)
    assert masked == plain
    assert "trained like `qwen` (no masking)" in caplog.text


def test_result_in_user_turn_is_trained_like_qwen(tokenizer, caplog):
    rows = [row("<python>1</python><result>1</result>", question="what does <result> mean?")]
    with caplog.at_level("WARNING", logger="arpo_train_sft.lf.masking"):
        assert encode(tokenizer, rows, TEMPLATE_NAME) == encode(tokenizer, rows, "qwen")
    assert "user turn" in caplog.text


def multi_turn_rows(count: int) -> list[dict]:
    """Three demo trajectories chained into one conversation per row: history turns carry results too."""
    single = demo_rows()
    rows = []
    for first in range(0, 3 * count, 3):
        turns = single[first : first + 3]
        messages = [m for t in turns for m in t["prompt"] + t["response"]]
        rows.append({"prompt": messages[:-1], "response": messages[-1:], "system": turns[0]["system"]})
    return rows


def flag_rows() -> list[dict]:
    return demo_rows()[:30] + multi_turn_rows(10)


# Every DataArguments flag that changes what LLaMA-Factory's labelling loop does with a turn.
FLAGS = {
    "mask_history": {"mask_history": True},
    "train_on_prompt": {"train_on_prompt": True},
    "packing": {"packing": True, "cutoff_len": 2048},
    "neat_packing": {"neat_packing": True, "cutoff_len": 2048},
    "packing-truncated": {"packing": True, "cutoff_len": 256},
    "mask_history-truncated": {"mask_history": True, "cutoff_len": 300},
    "train_on_prompt-truncated": {"train_on_prompt": True, "cutoff_len": 300},
}


@pytest.mark.parametrize("flags", FLAGS.values(), ids=FLAGS.keys())
def test_llamafactorys_loop_under_each_flag_hides_exactly_the_result_tokens(tokenizer, flags: dict):
    plain, masked, hidden, _ = assert_qwen_minus_result_spans(tokenizer, flag_rows(), **flags)
    assert hidden > 0
    if flags.get("packing") or flags.get("neat_packing"):
        assert all(len(m["input_ids"]) == flags["cutoff_len"] for m in masked)
        if flags["cutoff_len"] > 1024:
            assert len(masked) < len(flag_rows()) // 2  # rows really were packed together


def test_mask_history_trains_only_the_last_turn_and_hides_its_results(tokenizer):
    rows = multi_turn_rows(5)
    _, masked, _, _ = assert_qwen_minus_result_spans(tokenizer, rows, mask_history=True)
    for source, m in zip(rows, masked, strict=True):
        last = source["response"][0]["content"]
        trained = trained_text(tokenizer, m)
        # Each turn holds one <answer>: one trained answer means only the last turn is trained.
        assert trained.count("</answer>") == 1
        assert last[last.index("<answer>") + 1 :] + "<|im_end|>\n" in trained
        assert "<result>" not in trained


def test_train_on_prompt_trains_the_prompt_and_hides_only_assistant_results(tokenizer):
    rows = demo_rows()[:10]
    _, masked, _, _ = assert_qwen_minus_result_spans(tokenizer, rows, train_on_prompt=True)
    for source, m in zip(rows, masked, strict=True):
        # The prompt is trained now, and ARPO's system prompt itself names the <result> tag.
        prompt_mentions = (source["system"] + source["prompt"][0]["content"]).count("<result>")
        assert trained_text(tokenizer, m).count("<result>") == prompt_mentions


@pytest.mark.parametrize("cutoff_len", [24, 40, 56, 70, 90])
def test_truncation_inside_a_span_keeps_ids_identical(tokenizer, cutoff_len: int):
    answer = (
        "<think>t</think><python>print(2**100)</python><result>\n" + "1267650600228229401496703205376\n" * 3
    )
    answer += "</result><answer>\\boxed{1}</answer>"
    _, (masked,), _, _ = assert_qwen_minus_result_spans(tokenizer, [row(answer)], cutoff_len=cutoff_len)
    assert len(masked["input_ids"]) <= cutoff_len
    assert "1267650600228229401496703205376" not in trained_text(tokenizer, masked)


def test_cutoff_truncation_anywhere_hides_exactly_the_result_tokens(tokenizer):
    rows = flag_rows()
    cuts = 0
    for cutoff_len in range(64, 1100, 97):
        *_, cut = assert_qwen_minus_result_spans(tokenizer, rows, cutoff_len=cutoff_len)
        cuts += cut
    assert cuts > 5  # several of those cutoffs fell inside a result span


def test_register_is_idempotent_and_keeps_qwen_the_default():
    from llamafactory.data.template import TEMPLATES

    arpo_train_sft.register()
    first = TEMPLATES[TEMPLATE_NAME]
    arpo_train_sft.register()
    assert TEMPLATES[TEMPLATE_NAME] is first
    assert type(TEMPLATES["qwen"]).__name__ == "Template"


def test_unpatched_process_refuses_instead_of_training_on_results(tokenizer, monkeypatch):
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import TEMPLATES

    from arpo_train_sft.lf import masking

    monkeypatch.setattr(SupervisedDatasetProcessor, "_encode_data_example", masking._llamafactory_encode)
    with pytest.raises(RuntimeError, match="needs arpo_train_sft.lf.masking"):
        TEMPLATES[TEMPLATE_NAME].encode_multiturn(tokenizer, row("x")["prompt"] + row("x")["response"])
