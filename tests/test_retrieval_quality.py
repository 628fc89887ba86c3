"""Retrieval behaviours behind the measured quality: history steering, filters on history searches, near-duplicates.

The corpus-level figures live in benchmarks/retrieval.py (too slow for the test suite); these pin the mechanisms.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot.core.config import Settings
from bot.core.models import Audience, Filters
from bot.core.text import analyze
from bot.ingest.index import KnowledgeIndex
from bot.ingest.lexical import LexicalIndex
from bot.search.retrieval import HybridSearcher

pytestmark = pytest.mark.slow  # Streamlit/Chromium/corpus runs: minutes; `pytest -m "not slow"` skips them

PUBLIC = Filters(audience=Audience.PUBLIC)


def _docs(results) -> list[str]:
    out: list[str] = []
    for r in results:
        if r.chunk.doc_id not in out:
            out.append(r.chunk.doc_id)
    return out


def test_weighted_bm25_query_equals_the_text_query_with_unit_weights():
    texts = ["coin refunds within 14 days", "gift cards for coins", "data access requests in the EU"]
    lex = LexicalIndex(texts)
    terms: dict[str, float] = {}
    for t in analyze("coin refund days"):
        terms[t] = terms.get(t, 0.0) + 1.0
    weighted, plain = lex.search(terms, 3), lex.search("coin refund days", 3)
    assert [i for i, _ in weighted] == [i for i, _ in plain]
    assert [s for _, s in weighted] == pytest.approx([s for _, s in plain])
    # a history term with a small weight cannot outrank the question's own terms
    weighted = lex.search({**terms, "gift": 0.1}, 3)
    assert weighted[0][0] == 0 and {i for i, _ in weighted} == {0, 1}


def test_small_talk_turns_carry_no_information():
    lex = LexicalIndex(["coin refunds within 14 days", "gift cards for coins", "data access requests"])
    assert lex.information("yes, thanks") == 0.0
    assert lex.information("refund my gift card coins") > 2.0


def test_follow_up_is_resolved_from_the_history(fixture_index):
    searcher = HybridSearcher(fixture_index)
    history = [{"role": "user", "text": "I bought coins by mistake, can I get a refund for them?"},
               {"role": "assistant", "text": "You can ask for a refund of unused coins within 14 days."}]
    alone = _docs(searcher.search("How many days do I have?", PUBLIC, k=3))
    with_history = _docs(searcher.search("How many days do I have?", PUBLIC, k=3, history=history))
    assert alone[0] != "help-coin-refunds"  # on its own the question is about something else
    assert with_history[0] == "help-coin-refunds"


def test_history_searches_obey_the_same_filters(fixture_index):
    searcher = HybridSearcher(fixture_index)
    history = [{"role": "user", "text": "What is the fraud-review queue threshold for coin refund requests?"},
               {"role": "user", "text": "Which internal Ledger Console steps do agents follow?"}]
    results = searcher.search("and what about the refund steps?", PUBLIC, k=20, history=history)
    assert results
    assert all(r.chunk.metadata["audience"] == "public" for r in results)


def test_uninformative_history_changes_nothing(fixture_index):
    searcher = HybridSearcher(fixture_index)
    q = "deadline to answer a data access request"
    plain = searcher.search(q, Filters(regions=("EU",)), k=5)
    chatty = searcher.search(q, Filters(regions=("EU",)), k=5,
                             history=[{"role": "user", "text": "hi"}, {"role": "user", "text": "ok, thanks!"}])
    assert [r.chunk.chunk_id for r in chatty] == [r.chunk.chunk_id for r in plain]


def test_a_change_of_topic_is_not_dragged_back(fixture_index):
    searcher = HybridSearcher(fixture_index)
    history = [{"role": "user", "text": "How do I get a refund for coins I bought?"}]
    top = _docs(searcher.search("What is the deadline to answer a GDPR data access request in the EU?",
                                Filters(regions=("EU",)), k=3, history=history))
    assert top[0] == "sop-data-access-eu"


def test_copies_of_a_paragraph_do_not_crowd_out_other_documents(tmp_path, fixture_index):
    kb = tmp_path / "kb"
    kb.mkdir()
    shared = ("To close a seller account, open Seller Center, choose Account, then Close account. "
              "Pending payouts are paid within 30 days and open orders must be fulfilled first.")
    for doc_id, title, body in [
        ("close-seller-a", "Closing a seller account", shared),
        ("close-seller-b", "Seller account closure (copy)", shared),
        ("seller-payouts", "Seller payouts", "Seller Center pays out your sales every 14 days to your bank."),
    ]:
        (kb / f"{doc_id}.md").write_text(f"---\nid: {doc_id}\ntitle: {title}\naudience: public\n---\n# {title}\n\n"
                                         f"{body}\n")
    index = KnowledgeIndex(Settings(data_dir=tmp_path / "data", kb_dir=kb), embedder=fixture_index.embedder)
    assert index.sync().ok
    q = "how do I close my seller account"
    deduped = _docs(HybridSearcher(index).search(q, PUBLIC, k=3))
    raw = _docs(HybridSearcher(index, near_duplicate_jaccard=1.0).search(q, PUBLIC, k=3))
    copies = {"close-seller-a", "close-seller-b"}
    assert set(raw[:2]) == copies  # without the step both copies come first
    assert deduped[0] in copies and deduped[1] == "seller-payouts"  # the copy waits behind the distinct doc
    assert np.isclose(HybridSearcher(index).search(q, PUBLIC, k=1)[0].score, 1.0)


def test_adaptive_fusion_moves_weight_to_dense_when_bm25_misses_the_question(fixture_index):
    searcher = HybridSearcher(fixture_index, adaptive=True)
    filters = Filters(audience=Audience.INTERNAL)
    own_words = "coin refund"
    lexical = fixture_index.lexical_search(own_words, filters, 5)
    dense, lex = searcher.adaptive_weights(own_words, lexical)
    assert lex == pytest.approx(0.7) and dense == pytest.approx(0.3)  # the best BM25 chunk has every term
    mixed = "coin refund impersonating account sentinel"  # no single chunk holds all of these words
    dense, lex = searcher.adaptive_weights(mixed, fixture_index.lexical_search(mixed, filters, 5))
    assert 0.0 < lex < 0.7 and dense + lex == pytest.approx(1.0)
    unknown = "zyxwvut qwertyuiop"  # words in no chunk carry no idf mass: BM25 found nothing, dense decides
    assert searcher.adaptive_weights(unknown, fixture_index.lexical_search(unknown, filters, 5)) == (1.0, 0.0)
    assert searcher.adaptive_weights("qwertyuiop", []) == (1.0, 0.0)
