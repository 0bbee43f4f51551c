"""verify's batched generation: per-prompt state, tools that do not wait for the batch, the new metrics, and
batched greedy generation equal to one prompt at a time on the real tiny model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from arpo_train_sft import cli
from arpo_train_sft.verify.batch import run_prompts, verify_prompt
from arpo_train_sft.verify.engine import Row, load_model_dir
from arpo_train_sft.verify.loop import RESULT_FORMATS, Limits, Step
from arpo_train_sft.verify.prompts import Prompt
from arpo_train_sft.verify.report import metrics, summarize
from arpo_train_sft.verify.search import LocalCorpusSearch

EVAL = RESULT_FORMATS["eval"]
ANSWER = "<think> ok </think>\n<answer>\\boxed{{{}}}</answer>"
SCRIPTS = {  # question -> what the "model" writes at each generation
    "kenya": ["<think> a </think>\n<search> capital of Kenya </search>", ANSWER.format("Nairobi")],
    "made up": ["<think> b </think>\n<python>print(1)</python><result>1</result>", ANSWER.format(1)],
    "plain": [ANSWER.format(2)],
    "two searches": ["<search> gold </search>", "<search> gold </search>", ANSWER.format(79)],
}


class Corpus(LocalCorpusSearch):
    """The demo corpus, recording each query and setting `called` once one was answered."""

    def __init__(self) -> None:
        super().__init__(["Nairobi is the capital city of Kenya.", "Gold has atomic number 79."])
        self.called = threading.Event()

    def search(self, query: str, k: int) -> list[str]:
        found = super().search(query, k)
        self.called.set()
        return found


class Scripted:
    """An engine whose rows write SCRIPTS; the prompt text is the question, so a row knows its script."""

    name = "scripted"

    def __init__(self, corpus: Corpus | None = None) -> None:
        self.calls: list[list[int]] = []
        self.corpus = corpus

    def prompt(self, question: str) -> str:
        return f"{question}\n"

    def default_batch_size(self, limits: Limits) -> int:
        return 2

    def generate(self, rows: list[Row], on_done) -> None:
        self.calls.append([r.key for r in rows])
        for n, row in enumerate(rows):
            question, text = row.text.split("\n", 1)
            piece = SCRIPTS[question][text.count("</result>")]
            on_done(row.key, Step(piece, len(piece.split()), False))
            if n == 0 and self.corpus is not None and "<search>" in piece:
                # The first row's search must run while this call is still generating the others.
                assert self.corpus.called.wait(10), "the tool call waited for the whole batch"


def one_at_a_time(question: str, corpus: Corpus):
    pieces = iter(SCRIPTS[question])

    def generate(text: str, budget: int, seconds: float) -> Step:
        piece = next(pieces)
        return Step(piece, len(piece.split()), False)

    return verify_prompt(Prompt(question), generate, corpus, Limits(), EVAL)


def test_batched_rounds_keep_each_prompts_state_and_equal_one_at_a_time() -> None:
    prompts = [Prompt(q) for q in SCRIPTS]
    engine = Scripted()
    reports = run_prompts(engine, prompts, Corpus(), Limits(), EVAL, batch_size=2)
    for report, prompt in zip(reports, prompts, strict=True):
        alone = one_at_a_time(prompt.question, Corpus())
        assert (report.trajectory, report.stop, report.tool_stops) == (
            alone.trajectory,
            alone.stop,
            alone.tool_stops,
        )
    assert all(len(call) <= 2 for call in engine.calls)
    # Every round takes what is ready: the two new prompts, then the next two while the first two search.
    assert engine.calls[:2] == [[0, 1], [2, 3]]
    kenya = reports[0]
    assert "<search> capital of Kenya </search><result>Page 1: Nairobi" in kenya.trajectory
    assert (kenya.search_calls, kenya.answer, kenya.stop) == (1, "Nairobi", "answer")
    assert reports[3].repeated_queries == 1 and reports[3].tool_stops == 2


def test_a_tool_call_runs_while_the_rest_of_its_batch_generates() -> None:
    corpus = Corpus()
    prompts = [Prompt("kenya"), Prompt("plain")]
    reports = run_prompts(Scripted(corpus), prompts, corpus, Limits(), EVAL, batch_size=2)
    assert [r.stop for r in reports] == ["answer", "answer"]


def test_the_metrics_count_invented_results_and_stops_at_tools() -> None:
    prompts = [Prompt(q, a) for q, a in (("kenya", "Nairobi"), ("made up", "2"), ("plain", "2"))]
    reports = run_prompts(Scripted(), prompts, Corpus(), Limits(), EVAL, batch_size=8)
    made_up = reports[1]
    assert made_up.self_written_results == 1 and made_up.tool_stops == 1
    assert "<result>1</result><result>" not in made_up.trajectory  # the loop's own result, not the model's
    summary = summarize(reports)
    assert summary["self_written_result_rate"] == pytest.approx(1 / 3)
    assert summary["stopped_at_tool_rate"] == pytest.approx(2 / 3)
    assert summary["tool_calls_per_prompt"] == pytest.approx(2 / 3)
    assert (
        summary["accuracy"] == pytest.approx(2 / 3) and summary["format_compliance"] == summary["compliance"]
    )
    unscored = run_prompts(Scripted(), [Prompt("plain")], Corpus(), Limits(), EVAL, batch_size=1)
    assert "accuracy" not in metrics(unscored) and summarize(unscored)["accuracy"] is None


@pytest.fixture
def tiny(tiny_model: Path) -> Path:
    return tiny_model


def test_batched_left_padded_greedy_equals_one_prompt_at_a_time(tiny: Path) -> None:
    import torch

    engine = load_model_dir(tiny)
    assert engine.model.dtype == torch.float32  # on CPU verify generates in fp32
    base = [
        engine.prompt(q) for q in ("What is 6 * 7?", "Capital of Kenya? Say it in a long sentence.", "Gold?")
    ]
    texts = [
        base[0],
        base[1]
        + "<think> look </think>\n<search> Kenya </search><result>Page 1: Nairobi is the capital.</result>",
        base[2] + "<python>print(79)</python><result>79</result>\n",
    ]
    budgets = [24, 9, 17]  # every row its own budget, the batch's longest decides the call's length
    rows = [Row(i, t, n, float("inf")) for i, (t, n) in enumerate(zip(texts, budgets, strict=True))]
    batched: dict[int, Step] = {}
    engine.generate(rows, lambda key, step: batched.setdefault(key, step))
    for row in rows:
        alone: dict[int, Step] = {}
        engine.generate([row], alone.setdefault)
        assert batched[row.key] == alone[row.key]
        # and both equal plain transformers generate, with no padding and no stopping criteria of ours
        enc = engine.tokenizer(row.text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = engine.model.generate(
                **enc, max_new_tokens=row.max_new_tokens, do_sample=False, pad_token_id=engine.pad
            )
        new = out[0, enc["input_ids"].shape[1] :].tolist()
        assert batched[row.key].tokens == len(new) == row.max_new_tokens  # the random model never stops early
        assert batched[row.key].text == engine.tokenizer.decode(new, skip_special_tokens=True)


def test_vllm_without_vllm_is_one_line_and_exit_3(tiny: Path, capsys) -> None:
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    assert cli.main(["verify", str(tiny), "--engine", "vllm"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "arpo-sft: error: --engine vllm: vLLM is not installed; `pip install vllm`, or pass --engine hf"
    ]


def test_the_vllm_engine_generates_like_transformers(tiny: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed; the vLLM engine is not exercised here")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from arpo_train_sft.verify.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny)
    rows = [Row(0, engine.prompt("What is 6 * 7?"), 12, float("inf"))]
    got: dict[int, Step] = {}
    engine.generate(rows, lambda key, step: got.setdefault(key, step))
    assert got[0].tokens == 12 and got[0].text
    engine.close()
