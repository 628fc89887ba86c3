"""BM25 (bm25s) over the live chunks, with English stemming and stop words; filters applied as a weight mask."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType

import bm25s
import numpy as np

from bot.core.text import analyze

# bm25s pins its own logger to DEBUG at import, which prints "Building index from tokens" on every build
# whatever the application configured; hand the level back to normal logging configuration.
logging.getLogger("bm25s").setLevel(logging.NOTSET)


class LexicalIndex:
    """A BM25 index over a fixed list of texts; positions match the caller's chunk list."""

    def __init__(self, texts: list[str]):
        self.size = len(texts)
        self._bm25 = bm25s.BM25()
        self._df: Counter[str] = Counter()
        if texts:
            tokens = [analyze(t) or ["\u2205"] for t in texts]
            for toks in tokens:
                self._df.update(set(toks))
            self._bm25.index(tokens, show_progress=False)

    @property
    def doc_freq(self) -> Mapping[str, int]:
        """How many texts contain each analysed term (read-only; the idf of every stage comes from it)."""
        return MappingProxyType(self._df)

    def idf(self, term: str) -> float:
        """BM25 idf of an analysed term in this index (0 for terms it does not contain)."""
        df = self._df.get(term, 0)
        return math.log(1.0 + (self.size - df + 0.5) / (df + 0.5)) if df else 0.0

    def information(self, text: str) -> float:
        """Sum of the idf of the distinct terms of text: near 0 for "yes, thanks", high for a topical sentence."""
        return sum(self.idf(t) for t in set(analyze(text)))

    def search(self, query: str | Mapping[str, float], k: int, mask: np.ndarray | None = None
               ) -> list[tuple[int, float]]:
        """Top-k (position, score) pairs with a positive score; mask zeroes out positions the caller may not see.

        query is text, or analysed terms with a weight each (the retriever weights conversation history below
        the question this way)."""
        if not self.size:
            return []
        if isinstance(query, str):
            tokens = analyze(query)
            if not tokens:
                return []
            scores = self._bm25.get_scores(tokens)
        else:
            terms = {t: w for t, w in query.items() if w > 0 and t in self._df}
            if not terms:
                return []
            scores = np.zeros(self.size, dtype=np.float32)
            for term, weight in terms.items():
                scores += np.float32(weight) * self._bm25.get_scores([term])
        if mask is not None:
            scores = scores * mask
        k = min(k, self.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]
