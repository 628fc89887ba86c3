"""Index state persisted with the generation (bot/ingest/state.py): written at ingest, memory-mapped by a fresh
process that answers exactly as a generation built in memory does, older generations still load, and a request
asks Chroma for nothing but its vector query."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from bot.answer.service import AnswerService
from bot.core.config import Settings
from bot.core.models import Audience, Filters
from bot.ingest.index import KnowledgeIndex, matches
from bot.ingest.state import open_generation
from tests.conftest import index_over_copy

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-10-01"
QUESTIONS = [  # (question, audience, regions): agents and the public, a regional variant, one out of the KB
    ("How do I refund unused coins?", "internal", []),
    ("What is the fraud-review threshold for refund requests?", "internal", []),
    ("Can I withdraw from a shop order in the EU?", "public", ["EU"]),
    ("How do I reset two-factor authentication?", "public", []),
    ("What is the capital of Peru?", "public", []),
]
STATE_FILES = ("state.json", "offsets.npy", "ids.json", "columns", "lexical", "vectors.npy", "leak")

# Run in a fresh interpreter: answers every question and reports which generation files the process has mapped.
ANSWER_SCRIPT = """
import json, sys
from datetime import date
from pathlib import Path
from bot.answer.service import AnswerService
from bot.core.config import Settings
from bot.core.models import Audience, Filters
from bot.ingest.index import KnowledgeIndex

data_dir, kb_dir, questions, as_of = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
settings = Settings(data_dir=data_dir, kb_dir=kb_dir)
index = KnowledgeIndex(settings)
service = AnswerService(settings, index)
answers = []
for question, audience, regions in questions:
    f = Filters(audience=Audience(audience), regions=tuple(regions), as_of=date.fromisoformat(as_of))
    a = service.ask(question, [], f)
    answers.append({"text": a.text, "outcome": a.outcome, "confidence": round(a.confidence, 6),
                    "citations": [[c.doc_id, c.quote] for c in a.citations], "related": a.related,
                    "retrieved": a.retrieved_doc_ids})
gen = index.require_generation()
mapped = sorted({Path(line.split()[-1]).name for line in open("/proc/self/maps")
                 if str(Path(data_dir).resolve() / "gen") in line})
print(json.dumps({"answers": answers, "persisted": gen.persisted, "mapped": mapped}))
"""


def answer_in_fresh_process(data_dir: Path, kb_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", ANSWER_SCRIPT, str(data_dir), str(kb_dir), json.dumps(QUESTIONS),
                          AS_OF], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def strip_state(data_dir: Path) -> str:
    """Turn the served generation into the format written before state was persisted; returns its name."""
    name = json.loads((data_dir / "current.json").read_text())["generation"]
    for f in STATE_FILES:
        path = data_dir / "gen" / name / f
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return name


@pytest.fixture(scope="module")
def ingested(fixture_kb_dir, tmp_path_factory) -> Path:
    """The fixture KB ingested into a data dir of its own (embedded Chroma), by `policydesk ingest` in a process
    of its own: this test process must not own the store the fresh processes open. Tests copy it to write."""
    data_dir = tmp_path_factory.mktemp("state") / "data"
    env = dict(os.environ, POLICYDESK_DATA_DIR=str(data_dir), POLICYDESK_KB_DIR=str(fixture_kb_dir))
    subprocess.run([sys.executable, "-m", "bot.surfaces.cli", "ingest"], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return data_dir


def copy_of(data_dir: Path, target: Path) -> Path:
    shutil.copytree(data_dir, target, ignore=shutil.ignore_patterns("owner.lock", "owner.json"))
    return target


def test_ingest_writes_the_state_and_a_fresh_process_maps_it_and_answers_as_an_old_generation_does(
        ingested, fixture_kb_dir, tmp_path):
    persisted = answer_in_fresh_process(ingested, fixture_kb_dir)
    assert persisted["persisted"]
    # the BM25 matrix, the vectors, the filter columns and the leak facts are mapped, not read into memory
    for name in ("data.csc.index.npy", "vectors.npy", "public.npy", "leak_runs.npy", "chunks.jsonl"):
        assert name in persisted["mapped"], persisted["mapped"]

    old_dir = copy_of(ingested, tmp_path / "old")
    strip_state(old_dir)
    legacy = answer_in_fresh_process(old_dir, fixture_kb_dir)
    assert not legacy["persisted"] and not legacy["mapped"]
    assert persisted["answers"] == legacy["answers"]
    assert any(a["citations"] for a in persisted["answers"]) and any(a["outcome"] == "refused"
                                                                       for a in persisted["answers"])


def test_an_unchanged_sync_adds_the_state_to_an_old_generation(ingested, fixture_kb_dir, tmp_path):
    data_dir = copy_of(ingested, tmp_path / "data")
    old_name = strip_state(data_dir)
    index = KnowledgeIndex(Settings(data_dir=data_dir, kb_dir=fixture_kb_dir))
    old = index.require_generation()
    assert not old.persisted
    report = index.sync()
    assert report.ok and not (report.added or report.updated or report.removed)
    new = index.require_generation()
    assert new.persisted and new.name != old_name and not (data_dir / "gen" / old_name).exists()
    assert [c.chunk_id for c in new.chunks] == [c.chunk_id for c in old.chunks]
    stored = index.stored_vectors(list(new.by_id))  # rows of vectors.npy, as Chroma holds them
    for cid, vec in index._chroma_vectors(old, list(old.by_id)).items():
        assert np.allclose(stored[cid], vec)


def test_an_incremental_sync_carries_the_kept_vectors_over(fixture_kb_dir, tmp_path):
    index, kb = index_over_copy(fixture_kb_dir, tmp_path)
    index.sync()
    doc = kb / "sops" / "macro-refund.md"
    doc.write_text(doc.read_text() + "\n\nOne more line about refunds of unused coins.\n")
    assert index.sync().updated == ["macro-refund"]
    gen = index.require_generation()
    chroma = index._chroma_vectors(gen, list(gen.by_id))
    assert len(chroma) == len(gen.chunks)
    for cid, pos in gen.by_id.items():
        assert np.allclose(gen.vectors[pos], chroma[cid], atol=1e-6), cid


@pytest.mark.parametrize("filters", [
    Filters(), Filters(audience=Audience.PUBLIC), Filters(audience=Audience.PUBLIC, regions=("EU",)),
    Filters(regions=("US", "UK")), Filters(products=("coins",)), Filters(as_of=date(2025, 1, 1)),
    Filters(audience=Audience.PUBLIC, products=("no-such-product",)),
    Filters(as_of=date(2026, 10, 1), include_superseded=True), Filters(regions=("ROW",), products=("privacy",),
                                                                      as_of=date(2026, 8, 1)),
])
def test_the_column_masks_are_the_filter_rule(ingested, filters):
    gen = open_generation(ingested, json.loads((ingested / "current.json").read_text())["generation"])
    expected = [1.0 if matches(c.metadata, filters) else 0.0 for c in gen.chunks]
    assert gen.mask(filters).tolist() == expected
    assert 0 < sum(expected) or filters.as_of == date(2025, 1, 1)


class CountingCollection:
    """A real Chroma collection that counts the calls made on it."""

    def __init__(self, inner, calls: Counter):
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if callable(attr):
            def counted(*args, **kwargs):
                self._calls[name] += 1
                return attr(*args, **kwargs)
            return counted
        return attr


@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_a_request_makes_no_chroma_get(backend, fixture_kb_dir, tmp_path, request):
    extra = {}
    if backend == "server":
        host, port = request.getfixturevalue("chroma_server")
        extra = {"chroma_host": host, "chroma_port": port, "collection": f"count-{tmp_path.name}"[:60]}
    settings = Settings(data_dir=tmp_path / "data", kb_dir=fixture_kb_dir, **extra)
    index = KnowledgeIndex(settings)
    assert index.sync().ok
    index.open()
    calls: Counter = Counter()
    for key, collection in list(index._collections.items()):
        index._collections[key] = CountingCollection(collection, calls)
    service = AnswerService(settings, index)
    internal = Filters(audience=Audience.INTERNAL, as_of=date.fromisoformat(AS_OF))
    public = Filters(audience=Audience.PUBLIC, as_of=date.fromisoformat(AS_OF))
    answers = [service.ask("How do I refund unused coins?", [], internal),
               service.ask("Can I withdraw from a shop order in the EU?", [], public)]
    assert all(a.citations for a in answers)
    assert calls["query"] >= 2  # the vector search did go to Chroma
    assert calls["get"] == 0, calls


def test_chroma_holds_only_what_its_filter_needs(ingested, tmp_path):
    index = KnowledgeIndex(Settings(data_dir=copy_of(ingested, tmp_path / "data")))
    for aud in ("public", "internal"):
        got = index.collection(aud).get(limit=50, include=["documents", "metadatas"])
        assert got["ids"] and all(d is None for d in got["documents"])
        for meta in got["metadatas"]:
            assert set(meta) <= {"audience", "effective_ts", "superseded_ts"} | {
                k for k in meta if k.startswith(("region_", "product_"))}
            assert "title" not in meta and "path" not in meta
    # no text, so Chroma's full-text index (which nothing queries) stays empty
    db = sqlite3.connect(f"file:{ingested / 'chroma' / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM embedding_fulltext_search").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM embeddings").fetchone()[0] > 0
    finally:
        db.close()
