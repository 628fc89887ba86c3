"""BM25 (bm25s) over the live chunks, with English stemming and stop words; filters applied as a weight mask.

Built once at ingest and saved with the generation (bm25s's .npy score matrix plus our document frequencies);
every serving process loads it memory-mapped, so the matrix pages are shared and nothing is rebuilt."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import bm25s
import numpy as np

from bot.core.text import analyze

# bm25s pins its own logger to DEBUG at import, which prints "Building index from tokens" on every build
# whatever the application configured; hand the level back to normal logging configuration.
logging.getLogger("bm25s").setLevel(logging.NOTSET)


class _SavedDocFreq(Mapping[str, int]):
    """Document frequencies of a loaded index: bm25s's vocabulary (term -> column) and one count per column."""

    def __init__(self, vocab: Mapping[str, int], counts: np.ndarray):
        self._vocab = vocab
        self._counts = counts

    def __getitem__(self, term: str) -> int:
        return int(self._counts[self._vocab[term]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)


class LexicalIndex:
    """A BM25 index over a fixed list of texts; positions match the caller's chunk list."""

    def __init__(self, texts: list[str]):
        self.size = len(texts)
        self._bm25 = bm25s.BM25()
        self._df: Mapping[str, int] = Counter()
        if texts:
            tokens = [analyze(t) or ["\u2205"] for t in texts]
            counts: Counter[str] = Counter()
            for toks in tokens:
                counts.update(set(toks))
            self._df = counts
            self._bm25.index(tokens, show_progress=False)

    def save(self, folder: Path) -> None:
        """Write the index to folder (bm25s's files and doc_freq.npy, aligned with bm25s's vocabulary)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "size.txt").write_text(str(self.size))
        if not self.size:
            return
        self._bm25.save(str(folder), show_progress=False)
        vocab = self._bm25.vocab_dict
        counts = np.zeros(max(vocab.values(), default=-1) + 1, dtype=np.int64)
        for term, col in vocab.items():
            counts[col] = self._df.get(term, 0)
        np.save(folder / "doc_freq.npy", counts)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """An index saved by `save`, its score matrix memory-mapped (shared between processes, not copied)."""
        index = cls([])
        index.size = int((folder / "size.txt").read_text())
        if index.size:
            index._bm25 = bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
            index._df = _SavedDocFreq(index._bm25.vocab_dict, np.load(folder / "doc_freq.npy", mmap_mode="r"))
        return index

    @property
    def doc_freq(self) -> Mapping[str, int]:
        """How many texts contain each analysed term (read-only; the idf of every stage comes from it)."""
        return self._df if isinstance(self._df, _SavedDocFreq) else MappingProxyType(self._df)

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
