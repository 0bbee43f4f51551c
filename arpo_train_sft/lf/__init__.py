"""Every contact with LLaMA-Factory lives in this package; importing it checks the installed version first.

What it touches that LLaMA-Factory does not publish as API, and why (tests/lf/test_surface.py fails
loudly, naming the item, when an upgrade changes one of them):

- `data.processor.supervised.SupervisedDatasetProcessor._encode_data_example(prompt, response, system,
  tools, images, videos, audios) -> (input_ids, labels)`: the one method that labels a row, inherited
  unchanged by `PackedSupervisedDatasetProcessor`; it reads `self.template` and `self.data_args`. Its loop
  only slices and copies the ids `encode_multiturn` hands it, never reads their values: `masking`
  relies on that to pass marked ids through it, and wraps the method (LLaMA-Factory has no label hook).
- `data.template.TEMPLATES` and `Template` (a dataclass; `encode_multiturn(tokenizer, messages, system,
  tools, discarding_history_cot)`, `_encode`, `format_assistant`, `_convert_elements_to_ids`):
  `qwen_mask_results` is `qwen`'s fields in a subclass that overrides `encode_multiturn`, and `render`
  runs `_encode` with a recording tokenizer (it must only call `encode`, `convert_tokens_to_ids`,
  `bos_token_id`, `eos_token_id`) to count tokens exactly as training will.
- `data.processor.processor_utils.infer_seqlen(source_len, target_len, cutoff_len)`: how a turn is
  truncated at `cutoff_len`; the token counts of `arpo-sft data` follow it (masking needs no copy: it
  runs inside LLaMA-Factory's own loop).
- `hparams.parser._TRAIN_ARGS`: the training-argument dataclasses, to name unknown keys before launch.
- `extras.constants.IGNORE_INDEX`: the label the loss skips.
- `extras.constants.CHECKPOINT_NAMES`: the weight files whose presence in output_dir (without a
  checkpoint-N/) makes LLaMA-Factory refuse to start; `checkpoint/scan.py`'s FINAL_WEIGHTS must cover them.
- `hparams.parser.get_train_args(dict)`: every dataclass post-init and cross-check, run by preflight in a
  throwaway one-rank process (it sets up devices).

- The template encodes text only through `tokenizer.encode(piece, add_special_tokens=False)` (the same
  fact `render` relies on): `fastbpe` replaces that one bound method on the build's tokenizer instance
  with tiktoken where it proves the ids equal, and the instance carries it into pickled workers.
- `hparams.DataArguments` and `hparams.model_args.ProcessorArguments` (dataclasses): their fields are
  keys that change what preprocessing makes of the data, so `tokenize` puts them in the tokenized
  cache's key. It reads the field names from their source files (`ast`), so the launcher keys the cache
  without importing the stack.

Public API used: `train.tuner.run_exp`, `hparams.get_train_args`,
`data.template.get_template_and_fix_tokenizer`, `data.get_dataset`, `model.load_tokenizer` (the last two
build the tokenized cache in `tokenize`, exactly as LLaMA-Factory's SFT workflow calls them).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ..errors import UserError

# The LLaMA-Factory releases this plugin is tested with: the private items above were read there.
TESTED_VERSIONS = ("0.9.5",)


def check_version(installed: str | None) -> None:
    """Stop with one line when the installed LLaMA-Factory is not one this plugin was tested with."""
    if installed in TESTED_VERSIONS:
        return
    found = "is not installed" if installed is None else f"{installed} is installed"
    raise UserError(
        f"LLaMA-Factory {found}, but arpo-train-sft {_own_version()} is tested with "
        f"{' or '.join(TESTED_VERSIONS)} only (it patches private code); fix: "
        f"pip install 'llamafactory=={TESTED_VERSIONS[-1]}'"
    )


def _installed() -> str | None:
    try:
        return version("llamafactory")
    except PackageNotFoundError:
        return None


def _own_version() -> str:
    # The package's metadata, as the top-level `__version__` reads it (which sits above this layer).
    return version("arpo-train-sft")


check_version(_installed())
