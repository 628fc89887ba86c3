"""BM25 (bm25s) over the live chunks, with English stemming and stop words; filters applied as a weight mask."""

from __future__ import annotations

import re
from functools import lru_cache

import bm25s
import numpy as np

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_STOP = frozenset(
    "a an and are as at be but by for from has have how i if in into is it its me my of on or our so "
    "that the their them then there these they this to was we what when where which who will with you "
    "your can do does did am been being would could should may might us".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def analyze(text: str) -> list[str]:
    """Lower-case, split into word tokens, drop stop words, stem."""
    words = [w.replace("’", "'") for w in _TOKEN_RE.findall(text.lower())]
    words = [w for w in words if w not in _STOP]
    return _stemmer().stemWords(words)


class LexicalIndex:
    """A BM25 index over a fixed list of texts; positions match the caller's chunk list."""

    def __init__(self, texts: list[str]):
        self.size = len(texts)
        self._bm25 = bm25s.BM25()
        if texts:
            tokens = [analyze(t) or ["\u2205"] for t in texts]
            self._bm25.index(tokens, show_progress=False)

    def search(self, query: str, k: int, mask: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k (position, score) pairs with a positive score; mask zeroes out positions the caller may not see."""
        if not self.size:
            return []
        tokens = analyze(query)
        if not tokens:
            return []
        scores = self._bm25.get_scores(tokens)
        if mask is not None:
            scores = scores * mask
        k = min(k, self.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]
