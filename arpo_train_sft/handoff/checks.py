"""Stopping, the prompt and the tool-result splice: the model in ARPO's rollout against the model in training.

ARPO's rollout (verl/workers/rollout/vllm_rollout/vllm_rollout_with_tools.py) builds each sequence from ids:
the prompt from the tokenizer's chat template, then what vLLM generates up to a `</python>` or `</search>`
stop, then `tokenizer.encode(" <result>\\n{result}\\n</result>")`, then more generation, until an eos id.
Training rendered the same text with LLaMA-Factory's `qwen` template in one piece per message.
"""

from __future__ import annotations

from typing import Any

from ..arpo.prompt import ARPO_SYSTEM_PROMPT
from ..family import ENDOFTEXT, IM_END
from .model import ModelDir
from .rows import FAIL, PASS, WARN, Check

# ARPO's result splice, verbatim (leading space, newlines inside the tags); encoded on its own.
SPLICE = " <result>\n{result}\n</result>"
# A short ARPO trajectory in the system prompt's own layout (tags separated by spaces), cut at the tool call.
QUESTION = "What is 17 * 23?"
SAMPLE_CALL = "<think> I will compute 17 * 23 with python. </think> <python>\nprint(17 * 23)\n</python>"
SAMPLE_RESULT = "391"
SAMPLE_AFTER = (
    " <think> The product is 391. </think> <answer> The final answer is \\[ \\boxed{391} \\] </answer>"
)
STOP_NAMES = ("generation_config eos", "tokenizer eos")
TEMPLATE_NAME = "chat template"
SPLICE_NAME = "result splice"


def stop_checks(model: ModelDir) -> list[Check]:
    """Does generation stop at `<|im_end|>`: generation_config's eos ids and the tokenizer's eos token."""
    tokenizer = model.tokenizer
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if im_end is None or tokenizer.convert_ids_to_tokens(im_end) != IM_END:
        missing = f"the tokenizer has no {IM_END} token, so nothing can stop a chat turn"
        fix = "copy the base Qwen2.5-Instruct tokenizer files into the model dir"
        return [Check(name, FAIL, missing, fix) for name in STOP_NAMES]
    source, eos = "generation_config.json", (model.generation or {}).get("eos_token_id")
    if model.generation is None or "eos_token_id" not in model.generation:
        source, eos = "config.json (no generation_config.json eos_token_id)", model.config.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos]
    end_of_text = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    want = [im_end] + ([end_of_text] if end_of_text not in (None, im_end) else [])
    generation = Check(STOP_NAMES[0], PASS, f"{source} eos_token_id {eos} holds {IM_END} ({im_end})")
    if im_end not in ids:
        generation = Check(
            STOP_NAMES[0],
            FAIL,
            f"{source} eos_token_id {eos} lacks {IM_END} ({im_end}): vLLM would generate past the answer",
            f'set "eos_token_id": {want} in {model.path / "generation_config.json"}',
        )
    eos_token = Check(STOP_NAMES[1], PASS, f"eos_token is {IM_END}")
    if tokenizer.eos_token != IM_END:
        eos_token = Check(
            STOP_NAMES[1],
            FAIL,
            f"eos_token is {tokenizer.eos_token!r}, not {IM_END}: verl ends responses at the tokenizer's eos",
            f'set "eos_token": "{IM_END}" in {model.path / "tokenizer_config.json"}',
        )
    return [generation, eos_token]


def _training_ids(model: ModelDir, assistant: str) -> tuple[list[int], list[int]]:
    """(prompt ids, assistant ids) of ARPO's system prompt, QUESTION and `assistant`, rendered as training does."""
    from ..data.conversation import Conversation
    from ..lf.render import render

    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": assistant}]
    rendered = render(model.train_tokenizer, model.template, [Conversation(messages, ARPO_SYSTEM_PROMPT)])
    prompt, response = rendered.messages[0]
    return rendered.ids(prompt), rendered.ids(response)


def _first_difference(a: list[int], b: list[int]) -> int | None:
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return None if a == b else at


def _around(tokenizer: Any, ids: list[int], at: int) -> str:
    """The tokens around position `at`, each decoded on its own."""
    return repr([tokenizer.decode([token]) for token in ids[max(at - 2, 0) : at + 3]])


def template_check(model: ModelDir) -> Check:
    """The chat template's RL prompt (system, question, generation prompt) against training's prompt ids."""
    from jinja2.exceptions import TemplateError

    tokenizer = model.tokenizer
    fix = "copy chat_template.jinja (or tokenizer_config.json's chat_template) from the base model"
    if not tokenizer.chat_template:
        return Check(
            TEMPLATE_NAME, FAIL, "the tokenizer has no chat template: RL prompts cannot be built", fix
        )
    messages = [{"role": "system", "content": ARPO_SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]
    try:  # verl's rl_dataset.py: the text, then the tokenizer without special tokens
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except (TemplateError, ValueError, TypeError, KeyError) as err:
        return Check(TEMPLATE_NAME, FAIL, f"the chat template fails on ARPO's prompt ({err})", fix)
    got = tokenizer(text, add_special_tokens=False)["input_ids"]
    want = _training_ids(model, "x")[0]
    at = _first_difference(got, want)
    if at is None:
        return Check(TEMPLATE_NAME, PASS, f"ARPO's RL prompt renders to training's {len(want)} prompt ids")
    return Check(
        TEMPLATE_NAME,
        FAIL,
        f"ARPO's RL prompt differs from training's qwen template at token {at} of {len(want)}: the chat "
        f"template gives {_around(tokenizer, got, at)}, training gave {_around(tokenizer, want, at)}",
        fix,
    )


def splice_check(model: ModelDir) -> Check:
    """A trajectory with ARPO's result splice: prefix ids + splice ids + continuation ids against training's."""
    tokenizer = model.tokenizer
    splice = SPLICE.format(result=SAMPLE_RESULT)
    spliced = tokenizer.encode(splice)  # ARPO's call: default special tokens
    plain = tokenizer.encode(splice, add_special_tokens=False)
    if spliced != plain:
        extra = [tokenizer.decode([t]) for t in spliced if t not in plain]
        return Check(
            SPLICE_NAME,
            FAIL,
            f"tokenizer.encode adds {extra} to every tool result ARPO splices in mid-response",
            "make tokenizer.encode add no special tokens, as Qwen2.5's does (add_bos_token / add_eos_token in "
            "tokenizer_config.json, the post_processor in tokenizer.json)",
        )
    prefix = tokenizer.encode(SAMPLE_CALL, add_special_tokens=False)
    after = _training_ids(model, SAMPLE_AFTER)[1]  # the rest as training ends a message, <|im_end|> included
    rollout = prefix + spliced + after
    training = _training_ids(model, SAMPLE_CALL + splice + SAMPLE_AFTER)[1]
    at = _first_difference(rollout, training)
    if at is None:
        return Check(
            SPLICE_NAME, PASS, f"tool call + {splice!r} + the rest: the {len(training)} ids training saw"
        )
    where = f"training has {_around(tokenizer, training, at)}, the rollout {_around(tokenizer, rollout, at)}"
    if at >= len(prefix) + len(spliced) - 1:
        # Where `</result>` meets the text after it: ARPO encodes the splice alone, nothing to fix here.
        return Check(SPLICE_NAME, WARN, f"the ids differ only after </result> (token {at}): {where}")
    return Check(
        SPLICE_NAME,
        FAIL,
        f"ARPO's rollout tokenizes the tool call or the result differently from training (token {at}): {where}",
        "use the base model's tokenizer files (tokenizer.json) unchanged",
    )
