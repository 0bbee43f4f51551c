"""Each private LLaMA-Factory item listed in arpo_train_sft/lf/__init__.py, checked for exactly what we rely on.

A failure names the item and what changed: read that item again in the new release before widening
`TESTED_VERSIONS`.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
from pathlib import Path

import pytest

import arpo_train_sft.lf
from arpo_train_sft.lf import masking

PACKAGE = Path(arpo_train_sft.lf.__file__).parents[1]
IGNORE = -100


def changed(item: str, what: str) -> str:
    return f"LLaMA-Factory changed `{item}`: {what} (arpo_train_sft/lf relies on it; see lf/__init__.py)"


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.fixture(scope="module")
def tokenizer(qwen_tokenizer):
    """A copy: LLaMA-Factory's template fix adds tokens to the tokenizer it is handed."""
    return copy.deepcopy(qwen_tokenizer)


def llamafactory_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every `import llamafactory...` / `from llamafactory... import name` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "llamafactory":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] == "llamafactory"]
    return found


def test_llamafactory_is_imported_only_inside_lf():
    outside = {
        str(path.relative_to(PACKAGE)): llamafactory_imports(path)
        for path in PACKAGE.rglob("*.py")
        if "lf" not in path.relative_to(PACKAGE).parts[:1]
    }
    assert {path: found for path, found in outside.items() if found} == {}


def test_every_name_lf_imports_from_llamafactory_is_listed_in_its_docstring():
    doc = arpo_train_sft.lf.__doc__
    names = {name for path in (PACKAGE / "lf").glob("*.py") for _, name in llamafactory_imports(path)}
    assert names, "lf/ imports nothing from LLaMA-Factory?"
    assert sorted(name for name in names if name not in doc) == []
    for private in ("_encode_data_example", "_encode", "_convert_elements_to_ids", "_TRAIN_ARGS"):
        assert private in doc


def test_encode_data_example_signature():
    item = "SupervisedDatasetProcessor._encode_data_example"
    expected = ["self", "prompt", "response", "system", "tools", "images", "videos", "audios"]
    assert params(masking._llamafactory_encode) == expected, changed(item, "its parameters")
    assert inspect.signature(masking._llamafactory_encode).return_annotation in (
        "tuple[list[int], list[int]]",
        tuple[list[int], list[int]],
    ), changed(item, "what it returns")


def test_every_supervised_processor_labels_through_the_one_wrapped_method(tokenizer, monkeypatch):
    from llamafactory.data.processor.supervised import (
        PackedSupervisedDatasetProcessor,
        SupervisedDatasetProcessor,
    )
    from llamafactory.hparams import DataArguments

    item = "SupervisedDatasetProcessor._encode_data_example"
    overriding = [
        c.__name__ for c in SupervisedDatasetProcessor.__subclasses__() if "_encode_data_example" in vars(c)
    ]
    assert overriding == [], changed(item, f"overridden by {overriding}: wrap those too")
    assert "preprocess_dataset" in vars(PackedSupervisedDatasetProcessor)
    calls = []
    wrapped = SupervisedDatasetProcessor._encode_data_example
    monkeypatch.setattr(
        SupervisedDatasetProcessor,
        "_encode_data_example",
        lambda self, **kw: calls.append(kw) or wrapped(self, **kw),
    )
    args = DataArguments(template="qwen", packing=True, cutoff_len=256)
    processor = PackedSupervisedDatasetProcessor(
        template=masking.TEMPLATES["qwen"], tokenizer=tokenizer, processor=None, data_args=args
    )
    rows = 3
    processor.preprocess_dataset(
        {
            "_prompt": [[{"role": "user", "content": "hi"}]] * rows,
            "_response": [[{"role": "assistant", "content": "<python>1</python><result>1</result>"}]] * rows,
            **{key: [None] * rows for key in ("_system", "_tools", "_images", "_videos", "_audios")},
        }
    )
    assert len(calls) == rows, changed(
        "PackedSupervisedDatasetProcessor.preprocess_dataset",
        "it no longer labels rows through _encode_data_example",
    )


class _FixedPairs:
    """Mixin for a Template whose encode_multiturn hands the loop ids no tokenizer would produce."""

    pairs: list[tuple[list[int], list[int]]] = []

    def encode_multiturn(self, tokenizer, messages, system=None, tools=None, discarding_history_cot=False):
        return self.pairs


@pytest.mark.parametrize(
    ("flags", "input_ids", "labels"),
    [
        ({}, [1, 2, -1005, 7, 4, -1001], [IGNORE, IGNORE, -1005, 7, IGNORE, -1001]),
        ({"cutoff_len": 3}, [1, 2, -1005], [IGNORE, IGNORE, -1005]),
        ({"mask_history": True}, [1, 2, -1005, 7, 4, -1001], [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, -1001]),
        ({"train_on_prompt": True}, [1, 2, -1005, 7, 4, -1001], [1, 2, -1005, 7, 4, -1001]),
    ],
    ids=["plain", "cutoff", "mask_history", "train_on_prompt"],
)
def test_labelling_loop_only_slices_and_copies_the_ids_it_is_handed(tokenizer, flags, input_ids, labels):
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import TEMPLATES, Template
    from llamafactory.hparams import DataArguments

    qwen = TEMPLATES["qwen"]
    probe_class = type("Probe", (_FixedPairs, Template), {"pairs": [([1, 2], [-1005, 7]), ([4], [-1001])]})
    probe = probe_class(**{f.name: getattr(qwen, f.name) for f in dataclasses.fields(Template)})
    args = DataArguments(template="qwen", **{"cutoff_len": 100, **flags})
    processor = SupervisedDatasetProcessor(
        template=probe, tokenizer=tokenizer, processor=None, data_args=args
    )
    messages = [{"role": r, "content": "x"} for r in ("user", "assistant", "user")]
    got = masking._llamafactory_encode(
        processor, messages, [{"role": "assistant", "content": "x"}], None, None, [], [], []
    )
    assert got == (input_ids, labels), changed(
        "SupervisedDatasetProcessor._encode_data_example", f"its labelling loop under {flags or 'no flags'}"
    )


def test_template_is_a_dataclass_and_qwen_a_plain_template():
    from llamafactory.data.template import TEMPLATES, Template

    assert dataclasses.is_dataclass(Template), changed("Template", "no longer a dataclass")
    # A subclass (e.g. ReasoningTemplate) would do more in encode_multiturn than ours reproduces.
    assert type(TEMPLATES["qwen"]) is Template, changed(
        "TEMPLATES['qwen']", f"now a {type(TEMPLATES['qwen'])}"
    )
    ours = TEMPLATES[masking.TEMPLATE_NAME]
    assert isinstance(ours, masking.ResultMaskingTemplate)
    differ = [
        f.name
        for f in dataclasses.fields(Template)
        if getattr(ours, f.name) != getattr(TEMPLATES["qwen"], f.name)
    ]
    assert differ == [], changed(
        "Template", f"fields {differ} differ between qwen and {masking.TEMPLATE_NAME}"
    )
    assert not TEMPLATES["qwen"].efficient_eos, changed("TEMPLATES['qwen']", "efficient_eos is now on")


def test_encode_multiturn_signature_matches_our_override():
    from llamafactory.data.template import Template

    expected = ["self", "tokenizer", "messages", "system", "tools", "discarding_history_cot"]
    assert params(Template.encode_multiturn) == expected, changed(
        "Template.encode_multiturn", "its parameters"
    )
    assert params(masking.ResultMaskingTemplate.encode_multiturn) == expected
    assert inspect.getsource(Template.encode_multiturn).count("self._encode(") == 1, changed(
        "Template.encode_multiturn", "it no longer pairs up `_encode`'s messages"
    )


def test_encode_gives_one_id_list_per_message_and_assistant_ids_from_format_assistant(tokenizer):
    from llamafactory.data.template import TEMPLATES, Template

    assert params(Template._encode) == ["self", "tokenizer", "messages", "system", "tools"], changed(
        "Template._encode", "its parameters"
    )
    assert params(Template._convert_elements_to_ids) == ["self", "tokenizer", "elements"], changed(
        "Template._convert_elements_to_ids", "its parameters"
    )
    qwen = TEMPLATES["qwen"]
    answer = "<python>print('数学')</python><result>数学</result><answer>\\boxed{1}</answer>"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]
    encoded = qwen._encode(tokenizer, messages, "sys", None)
    assert len(encoded) == len(messages), changed("Template._encode", "no longer one id list per message")
    assert qwen.encode_multiturn(tokenizer, messages, "sys") == [(encoded[0], encoded[1])]
    elements = qwen.format_assistant.apply(content=answer)
    assert all(isinstance(e, str | dict | set) for e in elements), changed(
        "Template.format_assistant", "slot types"
    )
    assert encoded[1] == qwen._convert_elements_to_ids(tokenizer, elements), changed(
        "Template._encode", "an assistant message is no longer format_assistant's elements converted to ids"
    )
    # masking tokenizes each text element once more, with offsets: it must give the very same ids.
    per_element = []
    for element in elements:
        if isinstance(element, str):
            per_element += tokenizer(element, add_special_tokens=False)["input_ids"]
        else:
            per_element += qwen._convert_elements_to_ids(tokenizer, [element])
    assert per_element == encoded[1], changed(
        "Template._convert_elements_to_ids", "how text elements are encoded"
    )


def test_encode_uses_only_what_renders_recorder_provides(tokenizer):
    from arpo_train_sft.data.conversation import Conversation
    from arpo_train_sft.lf.render import load_template, render

    rows = [
        Conversation(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>a</think>"}]
        ),
        Conversation([{"role": "user", "content": " x "}, {"role": "assistant", "content": "数学 🚀"}], "s"),
    ]
    for name in ("qwen", masking.TEMPLATE_NAME):
        template = load_template(tokenizer, name)
        batch = render(tokenizer, template, rows)  # raises AttributeError if _encode needs more
        for row, parts in zip(rows, batch.messages, strict=True):
            assert [batch.ids(p) for p in parts] == template._encode(
                tokenizer, row.messages, row.system, None
            )


@pytest.mark.parametrize(
    ("source", "target", "cutoff", "kept"),
    [
        (10, 20, 100, (10, 20)),  # fits
        (100, 20, 100, (80, 20)),  # short target: the source is cut
        (10, 200, 100, (10, 90)),  # short source: the target is cut
        (300, 100, 100, (75, 25)),  # both long: cut in proportion
        (5, 5, 0, (0, 0)),
    ],
)
def test_infer_seqlen_truncates_as_read(source: int, target: int, cutoff: int, kept: tuple[int, int]):
    from llamafactory.data.processor.processor_utils import infer_seqlen

    from arpo_train_sft.lf.render import truncated_lengths

    assert params(infer_seqlen) == ["source_len", "target_len", "cutoff_len"], changed(
        "infer_seqlen", "parameters"
    )
    assert truncated_lengths is infer_seqlen
    assert infer_seqlen(source, target, cutoff) == kept, changed(
        "infer_seqlen", f"({source}, {target}, {cutoff}) now keeps {infer_seqlen(source, target, cutoff)}"
    )


def test_train_args_are_the_dataclasses_the_train_parser_reads():
    from llamafactory.hparams.parser import _TRAIN_ARGS, _parse_train_args

    from arpo_train_sft.lf.args import training_keys

    assert all(dataclasses.is_dataclass(cls) for cls in _TRAIN_ARGS), changed(
        "_TRAIN_ARGS", "not all dataclasses"
    )
    keys = training_keys()
    used = {
        "template",
        "cutoff_len",
        "mask_history",
        "train_on_prompt",
        "packing",
        "neat_packing",
        "tokenized_path",
        "preprocessing_num_workers",
        "deepspeed",
        "output_dir",
        "learning_rate",
    }
    assert used <= keys, changed("_TRAIN_ARGS", f"keys {sorted(used - keys)} are gone")
    parsed = _parse_train_args({"model_name_or_path": "m", "template": masking.TEMPLATE_NAME})
    assert [type(p) for p in parsed] == list(_TRAIN_ARGS), changed(
        "_TRAIN_ARGS", "not what the train parser builds"
    )
    with pytest.raises(ValueError, match="no_such_key"):
        _parse_train_args({"model_name_or_path": "m", "no_such_key": 1})


def test_ignore_index_and_markers_stay_apart():
    from llamafactory.extras.constants import IGNORE_INDEX

    assert IGNORE_INDEX == IGNORE, changed("IGNORE_INDEX", f"now {IGNORE_INDEX}")
    # Every marker (_MARK - id, id >= 0) lies below IGNORE_INDEX, so neither can be read as the other.
    assert masking._MARK < IGNORE_INDEX


def test_checkpoint_names_are_covered_by_the_scan():
    from arpo_train_sft.checkpoint.scan import FINAL_WEIGHTS
    from arpo_train_sft.lf.args import final_model_files

    missing = final_model_files() - set(FINAL_WEIGHTS)
    assert not missing, (
        f"extras.constants.CHECKPOINT_NAMES now also holds {sorted(missing)}: LLaMA-Factory refuses an "
        "output_dir with these files, so checkpoint/scan.py FINAL_WEIGHTS must name them too"
    )


def test_the_data_argument_names_read_from_source_are_the_dataclasses_fields():
    from llamafactory.hparams import DataArguments
    from llamafactory.hparams.model_args import ProcessorArguments

    from arpo_train_sft.lf.tokenize import _dataclass_fields

    for module, cls in (
        ("hparams/data_args.py", DataArguments),
        ("hparams/model_args.py", ProcessorArguments),
    ):
        assert _dataclass_fields(module, cls.__name__) == {f.name for f in dataclasses.fields(cls)}, changed(
            f"{cls.__name__}", "how its fields are declared"
        )
