"""The local embedder can read every 256-piece window of a long chunk, not only the first (all_windows)."""

from __future__ import annotations

import numpy as np
import pytest

from bot.ingest.embeddings import MAX_SEQ_TOKENS, LocalMiniLMEmbeddings


@pytest.fixture(scope="module")
def embedder() -> LocalMiniLMEmbeddings:
    return LocalMiniLMEmbeddings(all_windows=True)


def test_the_tail_of_a_long_chunk_counts_for_dense_search(embedder):
    head = "refund " * 300  # one word piece each: the first window is all refund
    tail = "renew your passport at the embassy before you travel abroad"
    assert embedder.pieces(head + tail) > MAX_SEQ_TOKENS
    first_window = "refund " * (MAX_SEQ_TOKENS - 2)  # what a truncating embedder reads of head + tail
    whole, truncated, query = embedder.embed_array([head + tail, first_window, "passport renewal at the embassy"])
    assert float(whole @ query) > float(truncated @ query) + 0.05
    assert abs(float(np.linalg.norm(whole)) - 1.0) < 1e-5


def test_a_text_that_fits_keeps_its_vector(embedder):
    texts = ["How do I refund unused coins?", "two-factor reset " * 20]
    first_only = LocalMiniLMEmbeddings(all_windows=False)
    assert np.allclose(embedder.embed_array(texts), first_only.embed_array(texts), atol=1e-6)
