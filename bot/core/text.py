"""The text toolkit every stage shares: one analyzer (tokenise, stop words, stem) for BM25, coverage and metrics,
one normaliser (span matching, leak shingles) and one answer-sentence splitter."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "was", "we", "what", "when", "where", "which", "who", "will", "with", "you", "your", "can", "do", "does", "did", "am", "been", "being", "would", "could", "should", "may", "might", "us"]
)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def analyze(text: str) -> list[str]:
    """Lower-case, split into word tokens, drop stop words, stem."""
    words = [w.replace("’", "'") for w in _TOKEN_RE.findall(text.lower())]
    words = [w for w in words if w not in STOP_WORDS]
    return _stemmer().stemWords(words)


def normalise(text: str) -> str:
    """Lower-case, Unicode-fold and keep only letters and digits, single-space separated (span matching)."""
    text = unicodedata.normalize("NFKC", text or "").lower().replace("’", "'")
    return " ".join(re.findall(r"[^\W_]+", text))


CITATION_MARKER_RE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_ABBREVIATIONS = frozenset(["art", "arts", "e.g", "i.e", "no", "nos", "vs", "etc", "approx", "st", "u.s", "u.s.c", "sec", "para", "cf", "fig", "ch"])


def split_sentences(text: str) -> list[tuple[str, tuple[int, ...]]]:
    """Answer sentences with the citation numbers attached to each; list items and lines are sentences."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for line in (text or "").splitlines():
        line = re.sub(r"^\s*(?:[-*+>]|\d+[.)])\s+", "", line).strip()
        if not line or line.startswith("#"):
            continue
        start = 0
        pieces: list[str] = []
        for m in re.finditer(r"[.!?](?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])*\s+(?=[A-Z0-9\"“(])", line):
            word = re.findall(r"[\w.]+$", line[start : m.start()].lower())
            if word and word[0].rstrip(".") in _ABBREVIATIONS:
                continue
            pieces.append(line[start : m.end()])
            start = m.end()
        pieces.append(line[start:])
        for piece in pieces:
            nums = tuple(int(n) for grp in CITATION_MARKER_RE.findall(piece) for n in re.split(r"[,;\s]+", grp) if n)
            clean = CITATION_MARKER_RE.sub("", piece).strip()
            if clean:
                out.append((clean, nums))
            elif nums and out:  # markers standing alone belong to the sentence before them
                out[-1] = (out[-1][0], out[-1][1] + nums)
    return out


class TermWeights:
    """Inverse document frequency of stemmed terms in the served index (unknown terms weigh the most).

    Built from the BM25 index's document frequencies (`LexicalIndex.doc_freq`, `LexicalIndex.size`)."""

    def __init__(self, doc_freq: Mapping[str, int], num_docs: int):
        self._df = doc_freq
        self._n = max(num_docs, 1)
        self._max = self.idf_from_df(0)
        self._vocab: dict[str, list[str]] | None = None  # first letter -> index terms, built on first use
        self._closest: dict[str, str] = {}  # unknown word -> closest index term ("" = none)

    def idf_from_df(self, df: int) -> float:
        """BM25-style idf, always positive."""
        return math.log(1.0 + (self._n - df + 0.5) / (df + 0.5))

    def known(self, stem: str) -> bool:
        """Whether the index contains the term at all (an unknown word cannot tie a turn to the KB's topics)."""
        return self._df.get(stem, 0) > 0

    def is_common(self, stem: str, share: float = 0.5) -> bool:
        """Whether a term occurs in more than `share` of the chunks (too common to name a topic)."""
        return self._df.get(stem, 0) > share * self._n

    def idf(self, stem: str) -> float:
        """idf of one stemmed term."""
        df = self._df.get(stem)
        return self._max if df is None else self.idf_from_df(df)

    @property
    def has_vocabulary(self) -> bool:
        """Whether the weights come from an index (uniform weights know no words, so every word counts)."""
        return bool(self._df)

    def closest(self, word: str, min_length: int = 5) -> str:
        """The index term a word unknown to the index most likely misspells ("retrun" -> "return"), or "".

        A typo keeps its first letter and is one edit away (two from 8 letters on; a swap of two letters is one
        edit): rapidfuzz's Damerau-Levenshtein distance against the index vocabulary. Looser matching turned
        words the KB lacks into words it has ("unicorn" -> union, "student" -> stunt). Words shorter than
        min_length are not matched (too many terms are one edit away). Cached per TermWeights (one per
        generation)."""
        if len(word) < min_length or not self._df or not word.isalpha():
            return ""
        if word not in self._closest:
            from rapidfuzz import process
            from rapidfuzz.distance import DamerauLevenshtein

            if self._vocab is None:  # by first letter: a typo keeps it
                self._vocab = {}
                for t in self._df:
                    if len(t) >= min_length - 1 and t.isalpha():
                        self._vocab.setdefault(t[0], []).append(t)
            limit = 1 if len(word) < 8 else 2
            pool = [t for t in self._vocab.get(word[0], ()) if abs(len(t) - len(word)) <= limit]
            hit = process.extractOne(word, pool, scorer=DamerauLevenshtein.distance, score_cutoff=limit)
            if len(self._closest) >= 20_000:  # bounded: a long-running service sees endless new words
                self._closest.clear()
            self._closest[word] = hit[0] if hit else ""
        return self._closest[word]

    @classmethod
    def uniform(cls) -> TermWeights:
        """Every term weighs the same."""
        return cls({}, 1)
