"""`qwen_mask_results` in tokenizer workers however they start: the hook comes with the template's class."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO, run_env
from .result_tokens import result_tokens
from .worker_probe import answers

IGNORE = -100


METHODS = ["spawn", "forkserver", "fork"]


@pytest.fixture(scope="module")
def probe(qwen_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One parent that imported the plugin hands the template to a worker started by each method."""
    tokenizer_dir = tmp_path_factory.mktemp("qwen-tokenizer")
    qwen_tokenizer.save_pretrained(tokenizer_dir)  # loads in ~1 s where a rebuild takes ~10 s
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    call = f"from tests.lf.worker_probe import main; main({METHODS!r}, {str(tokenizer_dir)!r})"
    result = subprocess.run(
        [sys.executable, "-c", call],
        cwd=REPO,
        env=run_env(PYTHONPATH=path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("method", METHODS)
def test_unpickling_the_template_installs_the_hook_in_a_fresh_worker(probe: dict, method: str):
    report = probe["methods"][method]
    fresh = method != "fork"
    # spawn and forkserver workers start with neither the plugin nor LLaMA-Factory loaded ...
    assert report["at_start"] == {"masking": not fresh, "llamafactory": not fresh}
    assert report["masking_before_unpickling"] is not fresh
    # ... and loading the template alone brings the plugin's hook with it.
    assert report["template_class"] == "ResultMaskingTemplate"
    assert report["hook_installed_after"] is True
    assert report["pooled_equal"] is True  # the worker's rows are the parent's, results masked


def test_the_rows_workers_made_hide_every_result_token(probe: dict, qwen_tokenizer):
    tokenizer = qwen_tokenizer
    hidden = 0
    for ids, labels in zip(probe["expected"]["input_ids"], probe["expected"]["labels"], strict=True):
        found = result_tokens(tokenizer, ids, answers())
        hidden += len(found.positions)
        assert all(labels[i] == IGNORE for i in found.positions)
    assert hidden > 0
