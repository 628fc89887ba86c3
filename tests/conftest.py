"""Shared, session-scoped fixtures: fixture KB (every loader and filter), real kb/ index, Chroma server, Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.core.config import Settings
from bot.ingest.index import KnowledgeIndex

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_KB = Path(__file__).resolve().parent / "fixtures" / "kb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_pdf(path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_title("LIVE gifts and Diamonds")
    pdf.set_font("Helvetica", size=16)
    pdf.multi_cell(0, 10, "LIVE gifts and Diamonds", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 7, "Gifts you receive during a LIVE turn into Diamonds. One Diamond is worth USD 0.005 "
                         "in creator earnings. You must be 18 or older to receive gifts.")
    pdf.output(str(path))


def _write_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.core_properties.title = "Impersonation reports"
    d.add_heading("Impersonation reports", level=1)
    d.add_heading("Steps", level=2)
    d.add_paragraph("Confirm the reporter is the person or brand being impersonated.", style="List Number")
    d.add_paragraph("Remove the impersonating account in Sentinel within 24 hours.", style="List Number")
    d.save(str(path))


def build_fixture_kb(target: Path) -> Path:
    """Copy the text fixtures and generate the binary ones (PDF, DOCX) with their metadata sidecars."""
    shutil.copytree(FIXTURE_KB, target)
    _write_pdf(target / "help" / "help-live-gifts.pdf")
    (target / "help" / "help-live-gifts.pdf.meta.yaml").write_text(
        "id: help-live-gifts\naudience: public\ntype: help_article\nregions: [global]\nproducts: [live]\n"
        "url: https://help.example.com/articles/help-live-gifts\n")
    _write_docx(target / "sops" / "sop-impersonation.docx")
    (target / "sops" / "sop-impersonation.docx.meta.yaml").write_text(
        "id: sop-impersonation\naudience: internal\ntype: sop\nregions: [global]\nproducts: [safety]\n")
    return target


@pytest.fixture(scope="session")
def fixture_kb_dir(tmp_path_factory) -> Path:
    """A private copy of tests/fixtures/kb with PDF and DOCX documents generated into it."""
    return build_fixture_kb(tmp_path_factory.mktemp("fixture") / "kb")


@pytest.fixture(scope="session")
def fixture_settings(tmp_path_factory, fixture_kb_dir) -> Settings:
    """Settings over the fixture KB with a fresh data dir."""
    return Settings(data_dir=tmp_path_factory.mktemp("fixture-data"), kb_dir=fixture_kb_dir)


@pytest.fixture(scope="session")
def fixture_index(fixture_settings) -> KnowledgeIndex:
    """The fixture KB ingested into embedded Chroma (read-only for tests: do not sync it again)."""
    index = KnowledgeIndex(fixture_settings)
    report = index.sync()
    assert report.ok, report.failed
    return index


@pytest.fixture(scope="session")
def kb_settings(tmp_path_factory) -> Settings:
    """Settings over the real kb/ with a fresh data dir."""
    return Settings(data_dir=tmp_path_factory.mktemp("kb-data"), kb_dir=ROOT / "kb")


@pytest.fixture(scope="session")
def kb_index(kb_settings) -> KnowledgeIndex:
    """The real kb/ ingested once per test session (read-only for tests)."""
    index = KnowledgeIndex(kb_settings)
    report = index.sync()
    assert report.ok, report.failed
    return index


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on 127.0.0.1; yields (host, port)."""
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    exe = Path(sys.executable).parent / "chroma"
    log = open(path / "server.log", "w")
    proc = subprocess.Popen([str(exe), "run", "--path", str(path / "db"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"chroma server did not start: {(path / 'server.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield "127.0.0.1", port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium; installed with apt when missing and we are root, else skipped (failed under CI)."""
    exe = "/usr/bin/chromium"
    if not os.path.exists(exe) and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not os.path.exists(exe):
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing: .ci/run must install Debian's chromium")
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    return exe


@pytest.fixture(scope="session")
def api_server(kb_settings, kb_index, tmp_path_factory):
    """The HTTP API on real uvicorn (127.0.0.1, free port) over the real kb/ index, own store and webhook."""
    from api_harness import running_api

    with running_api(kb_settings, kb_index, tmp_path_factory.mktemp("api")) as server:
        yield server
