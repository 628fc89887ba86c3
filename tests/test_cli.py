"""The `policydesk` command line, run as a real subprocess against a temp data dir."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).parent / "fixtures" / "bad"


def run(*args, data_dir: Path, check=True):
    """Run the CLI like a user would, with POLICYDESK_DATA_DIR pointing at a temp folder."""
    env = dict(os.environ, POLICYDESK_DATA_DIR=str(data_dir))
    out = subprocess.run([sys.executable, "-m", "bot.surfaces.cli", *map(str, args)], check=False, env=env,
                         capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_ingest_lists_failures_and_exits_nonzero_but_indexes_the_rest(fixture_kb_dir, tmp_path):
    kb = tmp_path / "kb"
    shutil.copytree(fixture_kb_dir, kb)
    shutil.copytree(BAD, kb / "bad")
    out = run("ingest", kb, "--json", data_dir=tmp_path / "data", check=False)
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["added"] == 12 and summary["failed"] == 3
    assert any("bad-date.md" in p and "effective_date" in m for p, m in summary["failures"].items())
    found = json.loads(run("search", "withdraw from a shop order", "--audience", "public", "--json",
                           data_dir=tmp_path / "data").stdout)
    assert found["results"][0]["doc_id"] == "help-shop-returns"


def test_search_json_and_filters(fixture_kb_dir, tmp_path):
    data = tmp_path / "data"
    run("ingest", fixture_kb_dir, data_dir=data)
    res = json.loads(run("search", "data access request deadline", "--region", "US", "-k", "3", "--json",
                         data_dir=data).stdout)["results"]
    assert {"doc_id", "audience", "title", "section", "score", "text"} <= set(res[0])
    assert res[0]["doc_id"] == "sop-data-access-us"
    assert all(r["doc_id"] != "sop-data-access-eu" for r in res)
    old = json.loads(run("search", "coin refund days", "--as-of", "2025-08-01", "--json", data_dir=data).stdout)
    assert "sop-coin-refund-v1" in [r["doc_id"] for r in old["results"]]
    assert "sop-coin-refund" not in [r["doc_id"] for r in old["results"]]
    bad = run("search", "x", "--as-of", "yesterday", data_dir=data, check=False)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_second_ingest_reports_unchanged_and_stats(fixture_kb_dir, tmp_path):
    data = tmp_path / "data"
    run("ingest", fixture_kb_dir, data_dir=data)
    again = json.loads(run("ingest", fixture_kb_dir, "--json", data_dir=data).stdout)
    assert again["unchanged"] == 12 and again["added"] == 0 and again["embedded"] == 0
    stats = json.loads(run("stats", "--json", data_dir=data).stdout)
    assert stats["documents"] == 12 and stats["by_audience"] == {"public": 4, "internal": 8}
    assert stats["vectors"] == stats["chunks"]


def test_search_on_empty_index_is_a_clear_error(tmp_path):
    out = run("search", "anything", data_dir=tmp_path / "empty", check=False)
    assert out.returncode == 2
    assert "is empty" in out.stderr and "policydesk ingest" in out.stderr and "Traceback" not in out.stderr


def test_kb_lint_on_shipped_kb_passes():
    out = run("kb", "lint", "--json", data_dir=ROOT / ".policydesk-unused")
    report = json.loads(out.stdout)
    assert report["errors"] == 0 and report["documents"] >= 75
    assert report["warnings"] >= 2  # some documents are deliberately past their review date


def test_kb_lint_finds_broken_links_dangling_supersedes_and_bad_fields(tmp_path):
    (tmp_path / "a.md").write_text("---\nid: a\ntitle: A\ntype: sop\naudience: internal\nregions: [global]\n"
                                   "version: '1'\neffective_date: 2026-01-01\nowner: X\nlast_reviewed: 2020-01-01\n"
                                   "review_every_days: 30\nsupersedes: nowhere\n---\n# A\nSee [B](kb:missing-doc).\n")
    (tmp_path / "b.md").write_text("---\nid: b\naudience: public\n---\n# B\nLinks [A](kb:a).\n")
    (tmp_path / "policydesk-profile.toml").write_text('[lint]\nrequired_fields = ["id", "owner", "url"]\n')
    out = run("kb", "lint", tmp_path, "--json", data_dir=tmp_path / "d", check=False)
    assert out.returncode == 1
    issues = json.loads(out.stdout)["issues"]
    problems = " | ".join(f"{i['path']}:{i['field']}:{i['problem']}" for i in issues)
    assert "kb:missing-doc" in problems
    assert "supersedes:points to unknown document 'nowhere'" in problems
    assert "public article links to internal document kb:a" in problems
    assert "b.md:owner:required field is missing" in problems
    assert "past its review date" in problems
    assert "b.md:url:public articles need a url" in problems


def test_kb_lint_asks_nothing_of_plain_markdown_without_a_profile(tmp_path):
    """A team's first documents: no front matter at all, and no house rules: lint finds nothing to fix."""
    (tmp_path / "refunds.md").write_text("# Refunds\n\nRefunds are possible within 14 days of purchase.\n")
    (tmp_path / "account-deletion.md").write_text("# Deleting your account\n\n1. Open Settings.\n2. Tap Delete.\n")
    out = run("kb", "lint", tmp_path, "--json", data_dir=tmp_path / "d", check=False)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["documents"] == 2 and report["errors"] == 0, report
