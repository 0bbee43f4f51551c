"""What a dataset worker sees, run in a fresh interpreter: `python -c "from tests.lf.worker_probe import main;
main(['spawn'], TOKENIZER_DIR)"`. Prints one JSON line. Only the standard library at module level, so a spawned or forkserver
worker that imports this module to find its functions gets nothing of the plugin from it.
"""

from __future__ import annotations

import json
import sys

MASKING = "arpo_train_sft.lf.masking"
_AT_START: dict[str, bool] = {}
ROWS = 6


def answers() -> list[str]:
    """The assistant messages of the probe's rows, each with one result span."""
    return [
        f"<python>print({n}*{n})</python><result>\n{n * n}\n</result><answer>\\boxed{{{n * n}}}</answer>"
        for n in range(ROWS)
    ]


def record_start() -> None:
    """Pool initializer: what the worker had loaded before it received any task."""
    _AT_START.update(masking=MASKING in sys.modules, llamafactory="llamafactory" in sys.modules)


def _hook_installed() -> bool:
    if MASKING not in sys.modules:
        return False
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    return SupervisedDatasetProcessor._encode_data_example is sys.modules[MASKING]._encode_data_example


def unpickle_template(payload: bytes) -> dict[str, bool]:
    """Load nothing but the pickled template, and say what that import brought with it."""
    import dill

    before = MASKING in sys.modules
    template = dill.loads(payload)
    return {
        "at_start": dict(_AT_START),
        "masking_before_unpickling": before,
        "template_class": type(template).__name__,
        "hook_installed_after": _hook_installed(),
    }


def encode(processor, batch: dict) -> dict:
    out = processor.preprocess_dataset(batch)
    return {"at_start": dict(_AT_START), "input_ids": out["input_ids"], "labels": out["labels"]}


def main(methods: list[str], tokenizer_dir: str) -> None:
    """Tokenize a few result-carrying rows with `qwen_mask_results` in workers started by each method,
    with the Qwen tokenizer saved at tokenizer_dir (the session's, tests/conftest.py)."""
    import dill
    import multiprocess
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    from arpo_train_sft.lf.masking import TEMPLATE_NAME

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    args = DataArguments(template=TEMPLATE_NAME, cutoff_len=512)
    template = get_template_and_fix_tokenizer(tokenizer, args)
    processor = SupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=None, data_args=args
    )
    batch = {
        "_prompt": [[{"role": "user", "content": f"square {n}"}] for n in range(ROWS)],
        "_response": [[{"role": "assistant", "content": answer}] for answer in answers()],
        **{key: [None] * ROWS for key in ("_system", "_tools", "_images", "_videos", "_audios")},
    }
    expected = processor.preprocess_dataset(batch)

    reports = {}
    for method in methods:
        # One worker, two tasks in order: the first loads nothing but the template, the second encodes rows.
        with multiprocess.get_context(method).Pool(1, initializer=record_start) as pool:
            alone = pool.apply(unpickle_template, (dill.dumps(template),))
            pooled = pool.apply(encode, (processor, batch))
        pooled_pairs = [pooled["input_ids"], pooled["labels"]]
        reports[method] = {
            **alone,
            "pooled_equal": pooled_pairs == [expected["input_ids"], expected["labels"]],
        }
    print(json.dumps({"methods": reports, "expected": {k: expected[k] for k in ("input_ids", "labels")}}))
