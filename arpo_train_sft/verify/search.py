"""Search for the verify loop: a backend protocol and an offline BM25 ranker over a local corpus file."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..errors import UserError

PAGE_CHARS = 1000  # ARPO's snippet search cuts each page to this many characters
_WORD = re.compile(r"\w+")
_K1, _B = 1.2, 0.75  # the usual BM25 constants


class SearchBackend(Protocol):
    """Anything that returns the `k` best passages for a query, best first."""

    def search(self, query: str, k: int) -> list[str]: ...


def format_pages(passages: Sequence[str]) -> str:
    """Lay passages out as ARPO's snippet search shows them to the model: `Page i: ...` lines."""
    return "\n".join(f"Page {i}: {' '.join(p.split())[:PAGE_CHARS]}" for i, p in enumerate(passages, 1))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class LocalCorpusSearch:
    """BM25 over a fixed list of passages; passages sharing no word with the query are never returned."""

    def __init__(self, passages: Sequence[str]) -> None:
        self.passages = list(passages)
        self._counts = [Counter(_words(p)) for p in self.passages]
        self._lengths = [sum(c.values()) for c in self._counts]
        self._mean_length = sum(self._lengths) / max(1, len(self._lengths))
        frequency = Counter(word for counts in self._counts for word in counts)
        n = len(self.passages)
        self._idf = {w: math.log(1 + (n - df + 0.5) / (df + 0.5)) for w, df in frequency.items()}

    @classmethod
    def from_file(cls, path: Path) -> LocalCorpusSearch:
        """Load a corpus: JSONL with a "text" field per line (*.jsonl), or plain text with one passage a line."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(
                f"{path}: cannot read the search corpus ({err}); pass a readable UTF-8 file"
            ) from err
        if path.suffix != ".jsonl":
            return cls([line for line in lines if line.strip()])
        passages, problems = [], []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                text = None
            if isinstance(text, str) and text.strip():
                passages.append(text)
            else:
                problems.append(
                    f'{path}:{number}: not a JSON object with a non-empty "text" string; fix the line'
                )
        if problems:
            raise UserError(problems)
        if not passages:
            raise UserError(f"{path}: the search corpus is empty; add one passage per line")
        return cls(passages)

    @classmethod
    def demo(cls) -> LocalCorpusSearch:
        """The facts the bundled demo data searches (elements, capitals, rivers, inventions), so verify runs offline."""
        # The demo data's search results are drawn from these snippets, so a demo-trained model finds them.
        from ..demo.facts import SEARCH_SNIPPETS

        return cls(list(SEARCH_SNIPPETS))

    def search(self, query: str, k: int) -> list[str]:
        """The `k` passages with the highest BM25 score for `query`, best first; ties keep corpus order."""
        words = set(_words(query))
        scored = []
        for i, (counts, length) in enumerate(zip(self._counts, self._lengths, strict=True)):
            score = 0.0
            for word in words & counts.keys():
                tf = counts[word]
                norm = tf + _K1 * (1 - _B + _B * length / self._mean_length)
                score += self._idf[word] * tf * (_K1 + 1) / norm
            if score > 0:
                scored.append((-score, i))
        return [self.passages[i] for _, i in sorted(scored)[:k]]
