"""One owner per embedded index, cold start, health on failing searches, cleanup after a kill (issue 12, 1/2/7).

Real parts only: embedded Chroma, the CLI as a second process, SIGKILL, uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import chromadb
import httpx
import pytest
from api_harness import serve_in_thread
from chromadb.config import Settings as ChromaSettings

from bot.core.config import Settings
from bot.core.models import Filters
from bot.ingest.index import KnowledgeIndex
from bot.search.retrieval import HybridSearcher
from bot.surfaces.api import create_app

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, data: Path, kb: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    env.update(POLICYDESK_DATA_DIR=str(data), POLICYDESK_KB_DIR=str(kb))
    return subprocess.run([sys.executable, "-m", "bot.surfaces.cli", *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


def _copy_kb(fixture_kb_dir: Path, tmp_path: Path) -> Path:
    kb = tmp_path / "kb"
    shutil.copytree(fixture_kb_dir, kb)
    return kb


def test_a_second_process_cannot_ingest_into_an_index_this_process_serves(fixture_kb_dir, tmp_path):
    kb = _copy_kb(fixture_kb_dir, tmp_path)
    index = KnowledgeIndex(Settings(data_dir=tmp_path / "data", kb_dir=kb))
    index.sync()
    searcher = HybridSearcher(index)
    assert searcher.search("LIVE gifts Diamonds", Filters(), k=3)
    (kb / "help" / "new.md").write_text("---\nid: zebra-policy\naudience: public\n---\n# Zebra\nZebra rules.\n")
    out = _cli("ingest", data=tmp_path / "data", kb=kb)
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "owned by another process" in lines[0] and f"pid {os.getpid()}" in lines[0]
    # the owner keeps answering, and its own re-sync picks the change up
    assert searcher.search("LIVE gifts Diamonds", Filters(), k=3)
    assert index.sync().added == ["zebra-policy"]
    assert searcher.search("zebra rules", Filters(), k=1)[0].chunk.doc_id == "zebra-policy"


def test_another_thread_of_the_owning_process_opens_the_index(fixture_kb_dir, tmp_path):
    """Ownership is per process: a Streamlit session or an API worker runs in its own thread and must not be
    refused by the lock its own process holds."""
    kb = _copy_kb(fixture_kb_dir, tmp_path)
    settings = Settings(data_dir=tmp_path / "data", kb_dir=kb)
    owner = KnowledgeIndex(settings)
    owner.sync()
    results: list[object] = []

    def open_in_thread() -> None:
        try:
            other = KnowledgeIndex(settings)
            results.append(HybridSearcher(other).search("LIVE gifts Diamonds", Filters(), k=1))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows what was raised
            results.append(exc)

    worker = threading.Thread(target=open_in_thread)
    worker.start()
    worker.join(timeout=300)
    assert len(results) == 1 and isinstance(results[0], list) and results[0], results
    assert owner.generation() is not None


def test_concurrent_first_requests_open_chroma_once(fixture_kb_dir, tmp_path):
    kb = _copy_kb(fixture_kb_dir, tmp_path)
    settings = Settings(data_dir=tmp_path / "data", kb_dir=kb)
    _cli("ingest", data=settings.data_dir, kb=kb)  # built by another process, as `serve` finds it
    index = KnowledgeIndex(settings)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def first_request() -> None:
        start.wait()
        try:
            index.collection("public").count()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_health_reports_degraded_with_the_reason_when_searches_fail(fixture_kb_dir, tmp_path):
    kb = _copy_kb(fixture_kb_dir, tmp_path)
    settings = Settings(data_dir=tmp_path / "data", kb_dir=kb)
    index = KnowledgeIndex(settings)
    index.sync()
    app = create_app(settings, index=index)
    with serve_in_thread(app) as url:
        assert httpx.get(f"{url}/v1/health", timeout=30).json()["status"] == "ok"
        name = index.collection("public").name
        same = ChromaSettings(anonymized_telemetry=False, allow_reset=False)  # this process's client, as it is
        chromadb.PersistentClient(path=str(settings.chroma_dir), settings=same).delete_collection(name)
        ask = httpx.post(f"{url}/v1/ask", json={"question": "How do LIVE gifts turn into Diamonds?"}, timeout=60)
        assert ask.status_code == 503
        health = httpx.get(f"{url}/v1/health", timeout=30)
        assert health.status_code == 503
        assert health.json()["status"] == "degraded" and "Vector search failed" in health.json()["detail"]


KILL_AFTER_SWAP = """
import os, signal, sys
from bot.core.config import Settings
from bot.ingest.index import KnowledgeIndex
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # killed right after the generation switch, before any cleanup
KnowledgeIndex._delete_stale = die
KnowledgeIndex(Settings(data_dir=sys.argv[1], kb_dir=sys.argv[2])).sync()
"""


@pytest.mark.slow  # three processes that each load the embedder and ingest
def test_the_next_sync_cleans_up_after_a_kill_just_after_the_generation_switch(fixture_kb_dir, tmp_path):
    kb = _copy_kb(fixture_kb_dir, tmp_path)
    data = tmp_path / "data"
    assert _cli("ingest", data=data, kb=kb).returncode == 0
    doc = kb / "help" / "no-front-matter.md"
    doc.write_text(doc.read_text() + "\n\nOrders to islands take 9 more days.\n")
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_SWAP, str(data), str(kb)], cwd=ROOT, timeout=600,
                            capture_output=True, text=True, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(list((data / "gen").iterdir())) == 2  # the old generation is still there ...

    index = KnowledgeIndex(Settings(data_dir=data, kb_dir=kb))
    live = {c.chunk_id for c in index.require_generation().chunks}
    assert index.vector_ids() > live  # ... and so are the replaced document's old vectors
    report = index.sync()
    assert report.summary()["unchanged"] == 12 and report.chunks_embedded == 0
    assert index.vector_ids() == live
    assert [d.name for d in (data / "gen").iterdir()] == [index.require_generation().name]
