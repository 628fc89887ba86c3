"""Operator mistakes (issue 12, item 6): one line naming the file, variable or path and what to do, no traceback.

The CLI runs as a real subprocess; the full and read-only disks are real tmpfs mounts (needs root: CI runs as
root in its container; elsewhere those two cases are skipped with the reason).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from bot.surfaces.cli import parse_filters

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it, from a working directory of their choosing."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "bot.surfaces.cli", *map(str, args)], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


def assert_one_line(out: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("toml, needles", [
    ('top_k = "many"\n', ("policydesk.toml", "top_k", "valid integer")),
    ("top_k = = 3\n", ("policydesk.toml", "not valid TOML", "line 1")),
])
def test_a_bad_policydesk_toml_is_one_line_naming_the_file_and_key(tmp_path, toml, needles):
    (tmp_path / "policydesk.toml").write_text(toml)
    assert_one_line(run_cli("stats", cwd=tmp_path, env={"POLICYDESK_DATA_DIR": str(tmp_path / "d")}), *needles)


@pytest.mark.parametrize("name, value, needle", [
    ("POLICYDESK_TOP_K", "abc", "valid integer"),
    ("POLICYDESK_API_KEYS", "not-json", "JSON"),
])
def test_a_bad_environment_variable_is_one_line_naming_it(tmp_path, name, value, needle):
    out = run_cli("stats", cwd=tmp_path, env={name: value, "POLICYDESK_DATA_DIR": str(tmp_path / "d")})
    assert_one_line(out, f"environment variable {name}", needle)


def test_unknown_settings_keys_are_warned_about_with_a_suggestion(tmp_path):
    (tmp_path / "policydesk.toml").write_text("topk = 3\n")
    out = run_cli("stats", cwd=tmp_path, env={"POLICYDESK_DATA_DIR": str(tmp_path / "d"), "POLICYDESK_FETCHK": "9"})
    assert out.returncode == 0, out.stderr
    assert "unknown setting 'topk' is ignored (did you mean 'top_k'?)" in out.stderr
    assert "POLICYDESK_FETCHK is not a PolicyDesk setting and is ignored (did you mean 'fetch_k'?)" in out.stderr


def test_a_data_dir_that_is_a_file_or_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_one_line(run_cli("--data-dir", tmp_path / "afile", "stats", cwd=tmp_path), "afile", "is a file")
    assert_one_line(run_cli("--data-dir", tmp_path / "afile" / "sub", "stats", cwd=tmp_path),
                    "afile/sub", "cannot be created", "--data-dir")


def _tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root")


@pytest.fixture()
def mounted(tmp_path):
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        _tmpfs(path, options)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_data_dir_is_one_line(tmp_path, mounted):
    ro = mounted("ro", "ro,size=1m")
    assert_one_line(run_cli("--data-dir", ro, "ingest", ROOT / "kb", cwd=tmp_path), str(ro), "not writable")


@pytest.mark.slow  # a real ingest into a full tmpfs: ~40 s
def test_a_full_disk_during_ingest_is_one_line(tmp_path, mounted):
    full = mounted("full", "size=2m")
    out = run_cli("--data-dir", full / "data", "ingest", ROOT / "kb", cwd=tmp_path)
    assert_one_line(out, "no space left", "--data-dir")


def test_cli_regions_are_validated_and_normalised_like_the_api():
    assert parse_filters("internal", ["us", "eu"], None, None).regions == ("US", "EU")
    for bad in ("USA", "Germany"):
        with pytest.raises(typer.BadParameter, match=f"unknown region '{bad}'; use one of global, EU, UK, US, ROW"):
            parse_filters("internal", [bad], None, None)
