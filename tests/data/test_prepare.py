"""`arpo-sft data prepare / stats / parity` on real files with the real Qwen2.5 tokenizer (tiny model dir)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from arpo_train_sft import cli
from arpo_train_sft.data import parity as data_parity
from arpo_train_sft.data import prepare as data_prepare
from arpo_train_sft.data import stats as data_stats
from arpo_train_sft.errors import UserError

from ..conftest import DEMO_DATA

DEMO = DEMO_DATA


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arpo_train_sft.demo.model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def invoke(module, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def demo_rows(n: int) -> list[dict]:
    return read_jsonl(DEMO)[:n]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """Ten good rows, then one of each kind of trouble, as rows 11..17."""
    good = demo_rows(10)
    user_assistant = json.loads(json.dumps(good[0]))
    for turn, role in zip(user_assistant["conversations"], ("user", "assistant"), strict=True):
        turn["from"] = role
    backspace = json.loads(json.dumps(good[1]))
    backspace["system"] = backspace["system"].replace("\\boxed", "\x08oxed")
    gpt_first = {
        "system": "s",
        "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}],
    }
    empty_turn = {
        "system": "s",
        "conversations": [{"from": "human", "value": " "}, {"from": "gpt", "value": "a"}],
    }
    path = write_jsonl(
        tmp_path / "raw.jsonl", [*good, user_assistant, backspace, gpt_first, empty_turn, [1, 2]]
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"system": "s", "conversations": [\n')  # a truncated last line
    return path


def test_every_row_is_accounted_for(messy: Path, model_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "prepared.jsonl"
    assert invoke(data_prepare, "prepare", "--input", str(messy), "--output", str(out), "--model", str(model_dir),
                  "--cutoff-len", "4096", "--fix-control-chars") == 0  # fmt: skip
    written = read_jsonl(out)
    rejects = read_jsonl(tmp_path / "prepared.rejects.jsonl")
    assert len(written) + len(rejects) == 16
    assert "16 input rows = 12 written + 4 rejected" in capsys.readouterr().out
    assert [r["row"] for r in rejects] == [13, 14, 15, 16]
    assert {r["row"]: r["line"] for r in rejects}[16] == 16
    assert all(r["reason"] for r in rejects)
    # roles normalized to what dataset_info.json registers for final_5w4_still
    assert {t["from"] for row in written for t in row["conversations"]} == {"human", "gpt"}
    # the backspace bug repaired
    assert "\x08" not in written[11]["system"] and "\\boxed" in written[11]["system"]
    report = json.loads((tmp_path / "prepared.jsonl.report.json").read_text())
    assert report["input_rows"] == 16 and report["rejected_rows"] == 4 and report["fixed_control_chars"] == 1


def test_without_the_fix_flag_control_chars_are_kept(messy: Path, model_dir: Path, tmp_path: Path):
    out = tmp_path / "prepared.jsonl"
    invoke(data_prepare, "prepare", "--input", str(messy), "--output", str(out), "--model", str(model_dir))
    assert "\x08oxed" in read_jsonl(out)[11]["system"]


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_length_policies(model_dir: Path, tmp_path: Path, policy: str):
    source = write_jsonl(tmp_path / "raw.jsonl", demo_rows(20))
    out = tmp_path / "out.jsonl"
    cutoff = 400  # demo rows are 308 to 611 tokens
    invoke(data_prepare, "prepare", "--input", str(source), "--output", str(out), "--model", str(model_dir),
           "--cutoff-len", str(cutoff), "--overlength", policy)  # fmt: skip
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    over = report["over_cutoff"]
    assert 0 < over < 20
    assert report["would_lose_im_end"] > 0 and report["would_lose_answer"] > 0
    rows = read_jsonl(out)
    if policy == "drop":
        assert len(rows) == 20 - over and report["rejected_by_reason"] == {"over-cutoff": over}
    else:
        assert rows == demo_rows(20) and report["rejected_rows"] == 0
    assert report["input_rows"] == report["output_rows"] + report["rejected_rows"] == 20


def llamafactory_trains(model_dir: Path, rows: list[dict], cutoff_len: int) -> list[tuple[list, list]]:
    """(input_ids, labels) of each file row, by LLaMA-Factory's own converter and supervised processor."""
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    args = DataArguments(template="qwen", cutoff_len=cutoff_len, dataset_dir=str(DEMO.parents[1]))
    (attr,) = get_dataset_list(["final_5w4_still"], args.dataset_dir)  # the shipped dataset_info.json
    converter = get_dataset_converter(attr.formatting, attr, args)
    template = get_template_and_fix_tokenizer(tokenizer, args)
    processor = SupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=None, data_args=args
    )
    aligned = [converter(row) for row in rows]
    out = processor.preprocess_dataset({key: [row[key] for row in aligned] for key in aligned[0]})
    return list(zip(out["input_ids"], out["labels"], strict=True))


def test_keep_trains_exactly_what_llamafactory_trains_on_the_raw_rows(model_dir: Path, tmp_path: Path):
    """Oracle: LLaMA-Factory's processor at the same cutoff_len, on the raw file and on the prepared one."""
    raw = demo_rows(20)
    out = tmp_path / "out.jsonl"
    invoke(data_prepare, "prepare", "--input", str(write_jsonl(tmp_path / "raw.jsonl", raw)), "--output",
           str(out), "--model", str(model_dir), "--cutoff-len", "400")  # fmt: skip
    trained = llamafactory_trains(model_dir, raw, 400)
    assert llamafactory_trains(model_dir, read_jsonl(out), 400) == trained
    # The report's cut counts are what LLaMA-Factory really does to these rows at that cutoff.
    whole = llamafactory_trains(model_dir, raw, 10**6)
    ignored = [[sum(label == -100 for label in labels) for _, labels in run] for run in (trained, whole)]
    target = [[len(labels) - n for (_, labels), n in zip(run, counts, strict=True)]
              for run, counts in zip((trained, whole), ignored, strict=True)]  # fmt: skip
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert report["would_lose_im_end"] == sum(a < b for a, b in zip(*target, strict=True)) > 0
    assert report["prompt_cut"] == sum(a < b for a, b in zip(*ignored, strict=True)) > 0
    assert report["over_cutoff"] == sum(len(ids) > 400 for ids, _ in whole)


def test_truncate_is_gone_and_says_what_to_use(model_dir: Path, tmp_path: Path, capsys):
    source = write_jsonl(tmp_path / "raw.jsonl", demo_rows(3))
    argv = ["data", "prepare", "--input", str(source), "--output", str(tmp_path / "out.jsonl"),
            "--model", str(model_dir)]  # fmt: skip
    assert cli.main([*argv, "--overlength", "truncate"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--overlength truncate was removed" in line and "<|im_end|>" in line
    assert (
        "--overlength keep (LLaMA-Factory truncates at cutoff_len itself" in line
        and "--overlength drop" in line
    )
    assert cli.main([*argv, "--overlength", "cut"]) == 2
    assert capsys.readouterr().err == "arpo-sft: error: --overlength cut: choose keep or drop\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.jsonl"]
    assert "truncate" not in cli.make_parser().parse_args(["data", "prepare", "--model", "m"]).overlength


def test_json_array_input_gives_the_same_output(model_dir: Path, tmp_path: Path):
    rows = demo_rows(5)
    as_array = tmp_path / "raw.json"
    as_array.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    outputs = []
    for source in (write_jsonl(tmp_path / "raw.jsonl", rows), as_array):
        out = tmp_path / f"{source.name}.out.jsonl"
        invoke(
            data_prepare, "prepare", "--input", str(source), "--output", str(out), "--model", str(model_dir)
        )
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == (tmp_path / "raw.jsonl").read_bytes()


def test_refuses_to_overwrite_its_input_and_leaves_nothing_half_written(model_dir: Path, tmp_path: Path):
    source = write_jsonl(tmp_path / "raw.jsonl", demo_rows(3))
    with pytest.raises(UserError, match="is the input file"):
        invoke(
            data_prepare,
            "prepare",
            "--input",
            str(source),
            "--output",
            str(source),
            "--model",
            str(model_dir),
        )
    with pytest.raises(UserError, match="no tokenizer could be loaded"):
        invoke(data_prepare, "prepare", "--input", str(source), "--output", str(tmp_path / "o.jsonl"),
               "--model", str(tmp_path / "nope"))  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.jsonl"]


def test_stats_on_the_bundled_data(model_dir: Path, tmp_path: Path, capsys):
    plot = tmp_path / "lengths.png"
    assert invoke(data_stats, "stats", str(DEMO), "--model", str(model_dir), "--cutoff-len", "500",
                  "--plot", str(plot), "--json") == 0  # fmt: skip
    figures = json.loads(capsys.readouterr().out.split("histogram:")[0])
    assert figures["rows"] == 300
    assert 300 < figures["tokens"]["p50"] <= figures["tokens"]["p90"] <= figures["tokens"]["max"] <= 700
    assert 0 < figures["rows_over_cutoff"] < 300
    assert 0 < figures["result_token_share"] < 0.5
    masked = figures["masked_token_share"]
    assert masked["qwen"] < masked["qwen_mask_results"] < 1
    assert figures["tool_calls_per_row"]["0"] > 0 and figures["tool_calls_per_row"]["2"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parity_agrees_for_the_qwen_chat_template(model_dir: Path, capsys):
    assert invoke(data_parity, "parity", "--model", str(model_dir), "--sample", "50", str(DEMO)) == 0
    assert "training and inference agree token for token" in capsys.readouterr().out


def test_parity_finds_a_skewed_chat_template_and_a_missing_system(model_dir: Path, tmp_path: Path, capsys):
    skewed = tmp_path / "skewed"
    import shutil

    shutil.copytree(model_dir, skewed)
    template = (skewed / "chat_template.jinja").read_text()
    (skewed / "chat_template.jinja").write_text(
        template.replace("<|im_start|>assistant\\n", "<|im_start|>assistant\\n\\n")
    )
    rows = demo_rows(3)
    del rows[2]["system"]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    assert invoke(data_parity, "parity", "--model", str(skewed), str(data)) == 1
    out = capsys.readouterr().out
    assert "row 1: first difference at token" in out
    assert "WARNING 1 rows have no system prompt" in out


def test_stats_names_the_rows_masking_cannot_handle(model_dir: Path, tmp_path: Path, capsys):
    rows = demo_rows(4)
    rows[1]["conversations"][1]["value"] = "<python>1</python><result>never closed<answer>\\boxed{1}</answer>"
    rows[3]["conversations"][0]["value"] = "What does <result> mean here?"
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    invoke(data_stats, "stats", str(data), "--model", str(model_dir), "--json")
    figures = json.loads(capsys.readouterr().out)
    assert figures["rows_qwen_mask_results_cannot_mask"] == {"count": 2, "rows": [2, 4]}


def test_batched_rendering_gives_llamafactorys_exact_ids(model_dir: Path):
    """The recorded-pieces path must tokenize exactly as LLaMA-Factory's own per-piece encode does."""
    from arpo_train_sft.data.conversation import normalize, to_conversation
    from arpo_train_sft.data.tokens import load_tokenizer
    from arpo_train_sft.lf.render import load_template, render

    tokenizer = load_tokenizer(str(model_dir))
    rows = [to_conversation(normalize(row, fix=False)[0]) for row in read_jsonl(DEMO)]
    rows.append(to_conversation({"conversations": [{"from": "human", "value": "  leading spaces\n\n"},
                                                   {"from": "gpt", "value": "\n\n<think>数学 🚀</think>  "}]}))  # fmt: skip
    for name in ("qwen", "qwen_mask_results"):
        template = load_template(tokenizer, name)
        batch = render(tokenizer, template, rows)
        reference = load_template(tokenizer, "qwen")
        for row, messages in zip(rows, batch.messages, strict=True):
            expected = reference.encode_multiturn(tokenizer, row.messages, row.system)
            assert [batch.ids(parts) for parts in messages] == [ids for pair in expected for ids in pair]
            assert [batch.length(parts) for parts in messages] == [
                len(ids) for pair in expected for ids in pair
            ]
