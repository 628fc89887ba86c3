"""Loaders and validation: every format into one Document, clear errors, one bad file never stops the rest."""

from pathlib import Path

from bot.core.models import Audience
from bot.ingest.loaders import load_document, load_paths

BAD = Path(__file__).parent / "fixtures" / "bad"


def test_every_format_loads_with_metadata(fixture_kb_dir):
    result = load_paths([fixture_kb_dir])
    assert result.failures == {}
    docs = {d.id: d for d in result.documents}
    assert {docs[i].format for i in ("help-coin-refunds", "help-shop-returns", "help-live-gifts",
                                    "sop-impersonation", "plain-notes")} == {"md", "html", "pdf", "docx", "txt"}
    html = docs["help-shop-returns"]
    assert html.audience is Audience.PUBLIC and html.regions == ("EU", "UK")
    assert "## Your right to withdraw" in html.text and "1. Open the order in the app." in html.text
    assert "| EU | 14 days |" in html.text
    assert "USD 0.005" in docs["help-live-gifts"].text and docs["help-live-gifts"].audience is Audience.PUBLIC
    docx_doc = docs["sop-impersonation"]
    assert "2. Remove the impersonating account in Sentinel within 24 hours." in docx_doc.text
    sop = docs["sop-coin-refund"]
    assert sop.supersedes == "sop-coin-refund-v1" and str(sop.effective_date) == "2026-07-01"


def test_document_without_front_matter_fails_closed(fixture_kb_dir):
    doc = load_document(fixture_kb_dir / "help" / "no-front-matter.md")
    assert doc.id == "no-front-matter"
    assert doc.title == "Shop delivery times"
    assert doc.audience is Audience.INTERNAL  # nothing is public unless it says so
    txt = load_document(fixture_kb_dir / "help" / "plain-notes.txt")
    assert txt.title == "Live streaming basics" and txt.audience is Audience.INTERNAL


def test_bad_files_name_file_field_and_problem_and_rest_still_loads(fixture_kb_dir, tmp_path):
    import shutil

    shutil.copytree(fixture_kb_dir, tmp_path / "kb")
    shutil.copytree(BAD, tmp_path / "kb" / "bad")
    result = load_paths([tmp_path / "kb"])
    assert len(result.documents) == 12
    msgs = {Path(p).name: m for p, m in result.failures.items()}
    assert set(msgs) == {"bad-audience.md", "bad-yaml.md", "bad-date.md"}
    assert "bad-audience.md" in msgs["bad-audience.md"] and "field 'audience'" in msgs["bad-audience.md"]
    assert "'everyone' is not one of internal, public" in msgs["bad-audience.md"]
    assert "field 'effective_date'" in msgs["bad-date.md"] and "YYYY-MM-DD" in msgs["bad-date.md"]
    assert "not valid YAML" in msgs["bad-yaml.md"]


def test_duplicate_ids_are_reported(tmp_path):
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text("---\nid: same-id\ntitle: T\n---\n# T\nBody text.\n")
    result = load_paths([tmp_path])
    assert len(result.documents) == 1
    (problem,) = result.failures.values()
    assert "duplicate id 'same-id'" in problem


def test_readme_sidecars_and_underscore_folders_are_not_documents(tmp_path):
    (tmp_path / "README.md").write_text("# About this KB\n")
    (tmp_path / "_src").mkdir()
    (tmp_path / "_src" / "draft.md").write_text("# Draft\nnot published\n")
    (tmp_path / "real.md").write_text("# Real\nA real document.\n")
    assert [d.id for d in load_paths([tmp_path]).documents] == ["real"]
