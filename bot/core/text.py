"""The text toolkit every stage shares: one analyzer (tokenise, stop words, stem) for BM25, coverage and metrics."""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
STOP_WORDS = frozenset(
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
    words = [w for w in words if w not in STOP_WORDS]
    return _stemmer().stemWords(words)
