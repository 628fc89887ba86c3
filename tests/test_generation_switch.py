"""A serving process switches to the generation another process publishes: one request sees one generation, one
thread loads while the others keep answering, and a generation collected under a loader is skipped, not fatal.

Generations are written with the real writer (bot/ingest/generations.py) the way an ingest in another process
does; no Chroma is needed because only the generation files are read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import bot.ingest.index as index_module
from bot.core.config import Settings
from bot.core.models import Audience, Chunk, Filters
from bot.ingest import served
from bot.ingest.generations import collect_garbage, swap_pointer, write_generation
from bot.ingest.index import KnowledgeIndex
from bot.ingest.state import write_state


def publish(data_dir: Path, text: str) -> str:
    """Write and switch to a one-document generation whose chunk says `text` (what an ingest elsewhere does)."""
    chunk = Chunk(f"c-{abs(hash(text))}", "doc", 0, text, ("Section",), 5, {"audience": "public", "title": "Doc"})
    docs = {"doc": {"chunk_ids": [chunk.chunk_id], "meta": {"audience": "public", "title": "Doc"}}}
    name = write_generation(data_dir, {"docs": docs}, [chunk],
                            lambda folder: write_state(folder, [chunk], None, docs))  # saved state, as ingest does
    swap_pointer(data_dir, name)
    return name


@pytest.fixture()
def index(tmp_path) -> KnowledgeIndex:
    return KnowledgeIndex(Settings(data_dir=tmp_path / "data", kb_dir=tmp_path / "kb"))


def test_a_pinned_request_keeps_its_generation_and_the_next_one_gets_the_new(index):
    first = publish(index.data_dir, "refunds take five days")
    with index.pinned():
        assert index.generation().name == first
        second = publish(index.data_dir, "refunds take ten days")
        # the switch happened mid-request: this request still answers from what it started with
        assert index.generation().name == first
        assert index.lexical_search("refunds days", _public(), 1)[0][0].text == "refunds take five days"
    assert index.generation().name == second
    assert index.lexical_search("refunds days", _public(), 1)[0][0].text == "refunds take ten days"


def test_one_thread_loads_a_new_generation_while_the_others_keep_serving(index, monkeypatch):
    first = publish(index.data_dir, "refunds take five days")
    assert index.generation().name == first
    second = publish(index.data_dir, "refunds take ten days")
    loading, release = threading.Event(), threading.Event()
    loads: list[str] = []
    real_load = index_module.open_generation

    def slow_load(data_dir, name):  # the real loader, held until the test has looked from other threads
        loads.append(name)
        loading.set()
        release.wait(30)
        return real_load(data_dir, name)

    monkeypatch.setattr(index_module, "open_generation", slow_load)
    seen: dict[str, str] = {}
    loader = threading.Thread(target=lambda: seen.setdefault("loader", index.generation().name))
    loader.start()
    assert loading.wait(30)
    others = [threading.Thread(target=lambda i=i: seen.setdefault(f"t{i}", index.generation().name))
              for i in range(4)]
    for t in others:
        t.start()
    for t in others:
        t.join(10)
    assert not any(t.is_alive() for t in others), "requests waited for another thread's load"
    assert {seen[f"t{i}"] for i in range(4)} == {first}
    release.set()
    loader.join(30)
    assert seen["loader"] == second and loads == [second]  # loaded once, not once per thread
    assert index.generation().name == second


def test_a_generation_collected_while_loading_gives_way_to_the_newer_one(index, monkeypatch):
    publish(index.data_dir, "refunds take five days")
    assert index.generation() is not None
    publish(index.data_dir, "refunds take ten days")
    real_load = index_module.open_generation
    newest: list[str] = []

    def load_after_a_newer_ingest(data_dir, name):
        if not newest:  # a newer ingest publishes and collects everything else right after we read the pointer
            newest.append(publish(data_dir, "refunds take fifteen days"))
            collect_garbage(data_dir, keep=newest[0])
        return real_load(data_dir, name)

    monkeypatch.setattr(index_module, "open_generation", load_after_a_newer_ingest)
    assert index.generation().name == newest[0]


def test_a_request_on_a_generation_collected_after_the_switch_still_answers(index):
    publish(index.data_dir, "refunds take five days")
    assert index.generation() is not None
    second = publish(index.data_dir, "refunds take ten days")
    with index.pinned():
        gen = index.generation()  # this replica switches to the second generation
        assert gen.name == second
        newest = publish(index.data_dir, "refunds take fifteen days")  # and a newer ingest collects it at once
        collect_garbage(index.data_dir, keep=newest)
        assert not (index.data_dir / "gen" / second).exists()
        # everything the request still needs was loaded at the switch, not lazily from the collected folder
        assert index.lexical_search("refunds days", _public(), 1)[0][0].text == "refunds take ten days"
        assert gen.leak_facts().generation == second


def test_an_unchanged_pointer_is_not_read_again(index, monkeypatch):
    publish(index.data_dir, "refunds take five days")
    gen = index.generation()
    reads: list[Path] = []
    real_read_pointer = served.read_pointer
    monkeypatch.setattr(served, "read_pointer", lambda d: reads.append(d) or real_read_pointer(d))
    for _ in range(100):
        assert index.generation() is gen
    assert reads == []


def _public() -> Filters:
    return Filters(audience=Audience.PUBLIC)
