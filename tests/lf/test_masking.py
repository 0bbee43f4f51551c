"""`template: qwen_mask_results` gives the same input_ids as `template: qwen`; only result labels differ."""

from __future__ import annotations

import json

import pytest

import arpo_train_sft
from arpo_train_sft.arpo.tags import find_result_spans
from arpo_train_sft.lf.masking import TEMPLATE_NAME

from ..conftest import DEMO_DATA

DEMO = DEMO_DATA
IGNORE = -100
SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def tokenizer():
    from arpo_train_sft.demo.model import build_qwen_tokenizer

    arpo_train_sft.register()
    return build_qwen_tokenizer()


def encode(tokenizer, rows: list[dict], template: str, **data_args) -> list[dict]:
    """Run LLaMA-Factory's own supervised processor (plain or packed) over ShareGPT-like rows."""
    from llamafactory.data.processor.supervised import (
        PackedSupervisedDatasetProcessor,
        SupervisedDatasetProcessor,
    )
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    args = DataArguments(template=template, cutoff_len=data_args.pop("cutoff_len", 4096), **data_args)
    processor_class = PackedSupervisedDatasetProcessor if args.packing else SupervisedDatasetProcessor
    processor = processor_class(
        template=get_template_and_fix_tokenizer(tokenizer, args),
        tokenizer=tokenizer,
        processor=None,
        data_args=args,
    )
    batch = {
        "_prompt": [row["prompt"] for row in rows],
        "_response": [row["response"] for row in rows],
        "_system": [row.get("system", SYSTEM) for row in rows],
        "_tools": [""] * len(rows),
        "_images": [None] * len(rows),
        "_videos": [None] * len(rows),
        "_audios": [None] * len(rows),
    }
    out = processor.preprocess_dataset(batch)
    return [
        {"input_ids": ids, "labels": labels}
        for ids, labels in zip(out["input_ids"], out["labels"], strict=True)
    ]


def row(answer: str, question: str = "What is 6 * 7?") -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "response": [{"role": "assistant", "content": answer}],
    }


def masked_text(tokenizer, example: dict) -> str:
    ids = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label == IGNORE]
    return tokenizer.decode(ids)


def trained_text(tokenizer, example: dict) -> str:
    return tokenizer.decode([label for label in example["labels"] if label != IGNORE])


def assert_same_ids_labels_differ_only_in_spans(tokenizer, rows, **data_args):
    plain = encode(tokenizer, rows, "qwen", **dict(data_args))
    masked = encode(tokenizer, rows, TEMPLATE_NAME, **dict(data_args))
    assert [e["input_ids"] for e in masked] == [e["input_ids"] for e in plain]
    for p, m in zip(plain, masked, strict=True):
        for token, p_label, m_label in zip(p["input_ids"], p["labels"], m["labels"], strict=True):
            assert m_label in (p_label, IGNORE)
            if m_label != p_label:
                assert p_label == token  # only trained tokens get masked
    return plain, masked


def demo_rows() -> list[dict]:
    rows = []
    for line in DEMO.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        human, gpt = data["conversations"]
        rows.append({**row(gpt["value"], human["value"]), "system": data["system"]})
    return rows


def test_bundled_data_identical_ids_and_every_result_masked(tokenizer):
    rows = demo_rows()
    plain, masked = assert_same_ids_labels_differ_only_in_spans(tokenizer, rows)
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
    _, (masked,) = assert_same_ids_labels_differ_only_in_spans(tokenizer, [row(answer)])
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


@pytest.mark.parametrize("cutoff_len", [24, 40, 56, 70, 90])
def test_truncation_inside_a_span_keeps_ids_identical(tokenizer, cutoff_len: int):
    answer = (
        "<think>t</think><python>print(2**100)</python><result>\n" + "1267650600228229401496703205376\n" * 3
    )
    answer += "</result><answer>\\boxed{1}</answer>"
    _, (masked,) = assert_same_ids_labels_differ_only_in_spans(
        tokenizer, [row(answer)], cutoff_len=cutoff_len
    )
    assert len(masked["input_ids"]) <= cutoff_len
    assert "1267650600228229401496703205376" not in trained_text(tokenizer, masked)


def test_packing_keeps_ids_identical(tokenizer):
    rows = demo_rows()[:40]
    _, masked = assert_same_ids_labels_differ_only_in_spans(tokenizer, rows, packing=True, cutoff_len=2048)
    assert len(masked) < 40  # rows really were packed together
    assert all("<result>" not in trained_text(tokenizer, m) for m in masked)


def test_mask_history_and_train_on_prompt_keep_ids_identical(tokenizer):
    rows = demo_rows()[:10]
    assert_same_ids_labels_differ_only_in_spans(tokenizer, rows, mask_history=True)
    _, masked = assert_same_ids_labels_differ_only_in_spans(tokenizer, rows, train_on_prompt=True)
    for source, m in zip(rows, masked, strict=True):
        # The prompt is trained now, and ARPO's system prompt itself names the <result> tag.
        prompt_mentions = (source["system"] + source["prompt"][0]["content"]).count("<result>")
        assert trained_text(tokenizer, m).count("<result>") == prompt_mentions


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
