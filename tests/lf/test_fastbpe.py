"""`lf/fastbpe.py`: tiktoken stands in for Qwen2.5's `encode` only where it gives the tokenizer's own ids.

The reference is the tokenizer itself (the real Qwen2.5 BPE, rebuilt offline), in both tokenizer.json
layouts that hold it (layouts.py: TikTokenConverter's and the one Qwen2.5 checkpoints ship): every string
here is encoded both ways. A tokenizer that differs in any way the proof relies on is refused, by name, and keeps
its own `encode`.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import random

import pytest

from arpo_train_sft.lf import fastbpe

from .layouts import BYTE_TOKENS, bpe_parts, published_checkpoint
from .rows import demo_rows

# Pieces where byte-level BPE implementations part ways if they are going to: added tokens inside text
# and their near misses, contractions in any case, digits of every script, whitespace runs, decomposed
# and precomposed accents (not NFC: goes to the tokenizer), Hangul jamo, emoji sequences, controls.
PIECES = (
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<|endoftext|>",
    "<|im_end",
    "im_end|>",
    "<|im_start|><|im_end|>",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "\n\n ",
    " \n",
    "'s",
    "'LL",
    "'Re",
    "'T",
    "123",
    "٣",
    "½",
    "Ⅻ",
    "e\u0301",
    "é",
    "\u0301",
    "한",
    "\u1100\u1161\u11a8",
    "数学",
    "😀",
    "👨‍👩‍👧",
    "\u200b",
    "\u00a0",
    "<think>",
    "</think>",
    "<result>",
    "</result>",
    "</python><result>",
    "><",
    "print(42)",
    "\\boxed{42}",
    "ǅ",
    "ﬁ",
    "\ufeff",
    "\x00",
    "\u2028",
    "Ω",
    "ℌ",
    "İ",
    "ß",
    "ſ",
    "K",
    "hello",
    " World",
    "x=1;",
    "    ",
    "...",
    "--",
    "`code`",
)


def fuzz(count: int, seed: int = 0) -> list[str]:
    """Strings made of the pieces above and random code points from every plane."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 24)):
            roll = rng.random()
            if roll < 0.5:
                parts.append(rng.choice(PIECES))
            elif roll < 0.8:
                parts.append("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 6))))
            else:
                points = [rng.randint(0, 0x10FFFF), rng.randint(0x300, 0x36F), rng.randint(0x1F300, 0x1FAFF)]
                parts.append("".join(chr(rng.choice(points)) for _ in range(rng.randint(1, 4))))
        out.append("".join(parts).encode("utf-8", "replace").decode("utf-8"))
    return out


@pytest.fixture(scope="session")
def converted(qwen_tokenizer):
    """Qwen2.5's BPE as TikTokenConverter writes it: every split of a token into two tokens is a rule."""
    return qwen_tokenizer


@pytest.fixture(scope="session")
def published(converted, tmp_path_factory):
    """The same ranks in the layout Qwen2.5's checkpoints ship (one rule per token), loaded as they are."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(published_checkpoint(converted, tmp_path_factory.mktemp("qwen2.5")))


@pytest.fixture(scope="session", params=["converted", "published"])
def qwen(request):
    """The reference tokenizer, in each layout."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def fast(qwen):
    """A copy of `qwen` whose encode goes through tiktoken."""
    tokenizer = pickle.loads(pickle.dumps(qwen))
    assert fastbpe.accelerate(tokenizer) is None
    assert isinstance(tokenizer.encode, fastbpe.FastEncode)
    return tokenizer


def own_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(text, add_special_tokens=False) for text in texts]


def demo_texts() -> list[str]:
    """Every message of the bundled data, and each assistant message as the qwen template hands it over."""
    texts = []
    for row in demo_rows():
        for message in row["prompt"] + row["response"]:
            texts += [message["content"], message["content"] + "<|im_end|>\n"]
        texts.append(row["system"])
    return texts


def test_both_layouts_hold_the_same_bpe_under_different_rules(converted, published):
    layouts = {"converted": converted, "published": published}
    rules = {name: json.loads(t.backend_tokenizer.to_str())["model"] for name, t in layouts.items()}
    assert rules["converted"]["vocab"] == rules["published"]["vocab"]
    merged = [rank for rank in rules["published"]["vocab"].values() if rank >= BYTE_TOKENS]
    assert len({"".join(rule) for rule in rules["published"]["merges"]}) == len(rules["published"]["merges"])
    assert len(rules["published"]["merges"]) == len(merged)
    assert len(rules["converted"]["merges"]) > 1.5 * len(merged)
    assert not rules["published"]["ignore_merges"] and rules["converted"]["ignore_merges"]
    texts = demo_texts()[:200] + fuzz(500, seed=2)
    assert own_ids(published, texts) == own_ids(converted, texts)


def test_the_same_ids_as_the_tokenizer_on_the_bundled_data_and_adversarial_strings(qwen, fast):
    texts = demo_texts() + fuzz(4000)
    assert own_ids(fast, texts) == own_ids(qwen, texts)
    assert any(not __import__("unicodedata").is_normalized("NFC", text) for text in texts)


def test_other_calls_go_to_the_tokenizer_unchanged(qwen, fast):
    text = "<|im_start|>user\nWhat is 6 * 7?<|im_end|>"
    assert fast.encode(text) == qwen.encode(text)
    assert fast.encode(text, add_special_tokens=True) == qwen.encode(text, add_special_tokens=True)
    assert fast.encode(text, "and a pair", add_special_tokens=False) == qwen.encode(
        text, "and a pair", add_special_tokens=False
    )
    assert fast(text)["input_ids"] == qwen(text)["input_ids"]


def encode_in_child(payload: bytes, texts: list[str], queue) -> None:
    tokenizer = pickle.loads(payload)
    queue.put((type(tokenizer.encode).__name__, own_ids(tokenizer, texts)))


def test_a_spawned_worker_unpickles_the_fast_path_and_gets_the_same_ids(qwen, fast):
    texts = fuzz(200, seed=1)
    context = multiprocessing.get_context("spawn")  # what datasets' workers do on Python 3.14
    queue = context.Queue()
    child = context.Process(target=encode_in_child, args=(pickle.dumps(fast), texts, queue))
    child.start()
    kind, ids = queue.get(timeout=120)
    child.join(timeout=60)
    assert kind == "FastEncode" and ids == own_ids(qwen, texts)


def rebuilt(qwen, edit) -> object:
    """A copy of the Qwen2.5 tokenizer whose tokenizer.json went through `edit`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(qwen.backend_tokenizer.to_str())
    edit(spec)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))


def swap_two_merges(spec: dict) -> None:
    merges = spec["model"]["merges"]
    merges[100], merges[5000] = merges[5000], merges[100]


def drop_a_merge(spec: dict) -> None:
    token = "".join(spec["model"]["merges"][9000])
    spec["model"]["merges"] = [rule for rule in spec["model"]["merges"] if "".join(rule) != token]


def another_split(spec: dict) -> None:
    """Give one token a rule that splits it into two tokens, but not where tiktoken's merging does."""
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    for at in range(1000, len(merges)):
        token = "".join(merges[at])
        splits = [
            [token[:k], token[k:]] for k in range(1, len(token)) if {token[:k], token[k:]} <= vocab.keys()
        ]
        other = [split for split in splits if split != bpe_parts(vocab, token)]
        if other:
            first = next(i for i, rule in enumerate(merges) if "".join(rule) == token)
            kept = [rule for rule in merges if "".join(rule) != token]
            spec["model"]["merges"] = [*kept[:first], other[0], *kept[first:]]
            return
    raise AssertionError("no token with a second split")


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda s: s.update(normalizer=None), "normalizer is None, not NFC"),
        (
            lambda s: s["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(
                Regex=r"\p{N}{1,3}|\s+|[^\s]+"
            ),
            "pre-tokenizer's split pattern is not Qwen2's",
        ),
        (
            lambda s: s["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True),
            "pre-tokenizer settings differ from Qwen2's",
        ),
        (lambda s: s["model"].update(byte_fallback=True), "model is not plain BPE"),
        (swap_two_merges, "merge rules are not ordered as their results' ids"),
        (drop_a_merge, "a token's merge rule differs from the one tiktoken's merging reaches it by"),
        (another_split, "a token's merge rule differs from the one tiktoken's merging reaches it by"),
        (
            lambda s: s["added_tokens"][2].update(lstrip=True),
            "added token '<|im_end|>' is normalised or stripped",
        ),
    ],
)
def test_a_tokenizer_that_differs_keeps_its_own_encode_and_says_why(qwen, edit, reason):
    tokenizer = rebuilt(qwen, edit)
    assert fastbpe.accelerate(tokenizer) == reason
    assert "encode" not in vars(tokenizer)


def test_a_tokenizer_that_splits_special_tokens_is_left_alone(qwen):
    tokenizer = rebuilt(qwen, lambda spec: None)
    tokenizer.split_special_tokens = True
    assert fastbpe.accelerate(tokenizer) == "split_special_tokens is set"
    assert "encode" not in vars(tokenizer)


@pytest.mark.parametrize("template", ["qwen", "qwen_mask_results"])
@pytest.mark.parametrize("data_args", [{}, {"cutoff_len": 300}, {"packing": True, "cutoff_len": 2048}])
def test_llamafactorys_processor_makes_the_same_rows_through_either_encode(qwen, fast, template, data_args):
    import arpo_train_sft

    from .rows import encode

    arpo_train_sft.register()
    rows = demo_rows()
    assert encode(fast, rows, template, **dict(data_args)) == encode(qwen, rows, template, **dict(data_args))
