"""The demo trained through torchrun with `template: qwen_mask_results` and two spawned tokenizer workers.

Every process of the run starts with `multiprocess` set to spawn (a `sitecustomize` on PYTHONPATH), so the
workers that tokenize (in the launcher's one tokenizing child, before torchrun) start fresh: only
unpickling the template can give them the plugin. The test then reads the dataset LLaMA-Factory saved and
the ranks trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import run_env
from .result_tokens import result_tokens
from .rows import IGNORE, assistant_messages, demo_rows, encode

pytestmark = pytest.mark.integration

SITECUSTOMIZE = """
import json, os, sys
method = os.environ.get("ARPO_TEST_START_METHOD")
if method:
    import multiprocess
    multiprocess.set_start_method(method, force=True)
    record = {"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv, "orig_argv": sys.orig_argv,
              "masking_loaded": "arpo_train_sft.lf.masking" in sys.modules}
    with open(os.path.join(os.environ["ARPO_TEST_PROCESS_LOG"], f"{os.getpid()}.json"), "w") as out:
        json.dump(record, out)
"""


@pytest.fixture(scope="module")
def spawned_run(checkout: Path, tmp_path_factory: pytest.TempPathFactory):
    scratch = tmp_path_factory.mktemp("masking-e2e")
    (scratch / "site").mkdir()
    (scratch / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (scratch / "processes").mkdir()
    tokenized = scratch / "tokenized"
    output_dir = scratch / "out"
    path = os.pathsep.join(p for p in (str(scratch / "site"), os.environ.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [
            "bash",
            "sft_train.sh",
            "yaml/demo_cpu.yaml",
            "template=qwen_mask_results",
            "preprocessing_num_workers=2",
            f"tokenized_path={tokenized}",
            "overwrite_cache=true",
            "max_steps=2",
            "save_steps=1000",
            "logging_steps=1",
            f"output_dir={output_dir}",
        ],
        cwd=checkout,
        env=run_env(
            PYTHONPATH=path,
            ARPO_TEST_START_METHOD="spawn",
            ARPO_TEST_PROCESS_LOG=str(scratch / "processes"),
            HF_DATASETS_CACHE=str(scratch / "hf-datasets"),  # nothing tokenized earlier can be reused
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    processes = [json.loads(p.read_text()) for p in (scratch / "processes").glob("*.json")]
    return result, tokenized, output_dir, processes


def test_training_ran_with_spawned_tokenizer_workers(spawned_run):
    result, tokenized, output_dir, processes = spawned_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"tokenized dataset: built {tokenized} (" in result.stdout
    assert (output_dir / "trainer_log.jsonl").is_file()
    # The launcher tokenizes once, before torchrun, in one child (`python -m arpo_train_sft.lf.tokenize`, its
    # spec on stdin); its pool is where the spawned workers run.
    builders = {p["pid"] for p in processes if "arpo_train_sft.lf.tokenize" in p["orig_argv"]}
    workers = [p for p in processes if "--multiprocessing-fork" in p["argv"] and p["ppid"] in builders]
    assert len(builders) == 1 and len(workers) >= 2, processes  # preprocessing_num_workers=2
    # torchrun's own argv names the entry module; its children are the ranks, which only load the result.
    launchers = {p["pid"] for p in processes if "arpo_train_sft.entry" in p["argv"]}
    ranks = {p["pid"] for p in processes if p["ppid"] in launchers}
    assert len(launchers) == 1 and len(ranks) == 2, processes
    pools = [p for p in processes if "--multiprocessing-fork" in p["argv"] and p["ppid"] in ranks]
    assert not pools, "a rank started tokenizer workers: it tokenized again"
    # Spawned workers start without the plugin: the template's class is all that can bring it in.
    assert not any(w["masking_loaded"] for w in workers)


def test_trained_dataset_hides_results_and_trains_all_else_as_qwen(spawned_run, checkout: Path):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    _, tokenized, _, _ = spawned_run
    trained = load_from_disk(str(tokenized))["train"]
    tokenizer = AutoTokenizer.from_pretrained(checkout / "models" / "arpo-sft-tiny-qwen2")
    rows = demo_rows()
    # The run tokenized in its own processes (through lf/fastbpe where proven exact); the reference is the
    # tokenizer's own encode here. Row by row, in order: the same ids, the same attention mask.
    qwen = encode(tokenizer, rows, "qwen", cutoff_len=1024)
    assert [list(e["input_ids"]) for e in trained] == [e["input_ids"] for e in qwen]
    assert [list(e["attention_mask"]) for e in trained] == [e["attention_mask"] for e in qwen]
    hidden = 0
    for example, plain in zip(trained, qwen, strict=True):
        found = result_tokens(tokenizer, plain["input_ids"], assistant_messages(rows))
        expected = [IGNORE if i in found.positions else label for i, label in enumerate(plain["labels"])]
        assert list(example["labels"]) == expected
        hidden += sum(plain["labels"][i] != IGNORE for i in found.positions)
    assert hidden > 1000  # 264 of the 300 demo rows carry results
