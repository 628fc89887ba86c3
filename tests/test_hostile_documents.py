"""Hostile KB files (issue 12, item 3): each is named with its problem, costs bounded time, never stops the rest."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from bot.core.config import Settings
from bot.ingest.index import KnowledgeIndex
from bot.ingest.lint import lint_kb
from bot.ingest.loaders import load_paths

GOOD = "---\nid: good-doc\ntitle: Good\n---\n# Good\nA good document about refunds.\n"


def _kb(tmp_path: Path) -> Path:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "good.md").write_text(GOOD)
    return kb


def test_a_sidecar_that_is_not_utf8_is_named_and_the_rest_loads(tmp_path):
    kb = _kb(tmp_path)
    (kb / "notes.txt").write_text("Some internal notes.\n")
    (kb / "notes.txt.meta.yaml").write_bytes(b"id: notes\ntitle: Caf\xe9 notes\n")
    result = load_paths([kb])
    assert [d.id for d in result.documents] == ["good-doc"]
    (problem,) = result.failures.values()
    assert "notes.txt.meta.yaml" in problem and "not UTF-8" in problem
    report = lint_kb([kb], strict_fields=False)  # lint reads sidecars too, and must not crash on them
    assert any("not UTF-8" in i.problem for i in report.errors)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    kb = _kb(tmp_path)
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefg"):
        prev = "a" if i == 0 else "bcdefg"[i - 1]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    (kb / "bomb.md").write_text("---\nid: bomb\n" + "\n".join(levels) + "\n---\n# Bomb\nBody.\n")
    started = time.perf_counter()
    result = load_paths([kb])
    assert time.perf_counter() - started < 5  # 10^7 strings if the aliases were expanded
    assert [d.id for d in result.documents] == ["good-doc"]
    (problem,) = result.failures.values()
    assert "bomb.md" in problem and "aliases" in problem


def test_symlinks_leaving_the_kb_and_loops_are_refused_and_reported(tmp_path):
    kb = _kb(tmp_path)
    outside = tmp_path / "secret.md"
    outside.write_text("---\nid: secret\n---\n# Secret\nA file outside the KB.\n")
    (kb / "leak.md").symlink_to(outside)
    (kb / "loop-a.md").symlink_to(kb / "loop-b.md")
    (kb / "loop-b.md").symlink_to(kb / "loop-a.md")
    (kb / "alias.md").symlink_to(kb / "good.md")  # inside the KB: followed (and a duplicate id)
    result = load_paths([kb])
    assert "secret" not in {d.id for d in result.documents}
    msgs = {Path(p).name: m for p, m in result.failures.items()}
    assert "outside the KB folder" in msgs["leak.md"]
    assert "symlink loop" in msgs["loop-a.md"] and "symlink loop" in msgs["loop-b.md"]


def test_a_file_over_the_size_limit_is_skipped_quickly_and_named(tmp_path):
    kb = _kb(tmp_path)
    (kb / "huge.md").write_text("---\nid: huge\n---\n# Huge\n" + "word " * 50_000)
    result = load_paths([kb], max_chars=100_000)
    assert [d.id for d in result.documents] == ["good-doc"]
    assert "POLICYDESK_MAX_DOCUMENT_CHARS" in result.failures[str(kb / "huge.md")]
    result = load_paths([kb], max_bytes=10_000)
    assert "POLICYDESK_MAX_DOCUMENT_BYTES" in result.failures[str(kb / "huge.md")]
    report = KnowledgeIndex(Settings(data_dir=tmp_path / "data", kb_dir=kb, max_document_chars=100_000)).sync()
    assert report.added == ["good-doc"] and list(report.failed) == [str(kb / "huge.md")]


def test_a_newcomer_with_a_taken_id_is_blamed_and_never_replaces_the_established_document(fixture_kb_dir, tmp_path):
    kb = tmp_path / "kb"
    shutil.copytree(fixture_kb_dir, kb)
    index = KnowledgeIndex(Settings(data_dir=tmp_path / "data", kb_dir=kb))
    index.sync()
    established = index.require_generation().documents["sop-data-access-us"]["path"]
    # sorts before the established file, so "first in path order" would hand it the id
    (kb / "aaa-copy.md").write_text("---\nid: sop-data-access-us\n---\n# Copy\nZebra crossing notes.\n")
    report = index.sync()
    assert list(report.failed) == [str(kb / "aaa-copy.md")]
    assert established in report.failed[str(kb / "aaa-copy.md")]
    assert report.updated == [] and report.removed == []
    texts = [c.text for c in index.require_generation().chunks if c.doc_id == "sop-data-access-us"]
    assert texts and not any("Zebra" in t for t in texts)
