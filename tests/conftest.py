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


def stop_process(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `grace` seconds (servers may wait for work)."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until_serving(probe_url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 180,
                       expect_text: str | None = None) -> None:
    """Poll probe_url until it answers 200 (and expect_text, when given); fail with the server's log if the
    process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(probe_url, timeout=2, trust_env=False)
            if r.status_code == 200 and (expect_text is None or r.text == expect_text):
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{probe_url} did not come up: {log_path.read_text()[-3000:]}")
        time.sleep(0.3)


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


def index_over_copy(fixture_kb_dir: Path, tmp_path: Path) -> tuple[KnowledgeIndex, Path]:
    """An index (not yet synced) over a private copy of the fixture KB that a test may edit; returns it and the
    copy's folder."""
    kb = tmp_path / "kb"
    shutil.copytree(fixture_kb_dir, kb)
    return KnowledgeIndex(Settings(data_dir=tmp_path / "data", kb_dir=kb)), kb


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
    log = open(path / "server.log", "w")  # noqa: SIM115 - the server writes to it until the fixture ends
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
    stop_process(proc, grace=10)
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


# ---- Postgres (Debian's postgresql; .ci/run installs it) ----------------------------------------------------------
def _postgres_bindir() -> Path | None:
    """Folder of Debian's initdb/pg_ctl (they are not on PATH), newest major version first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name),
                   reverse=True)
    return found[0].parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 with a throw-away data dir; yields its base URL (no database).

    initdb refuses to run as root, so under root (CI) the server runs as Debian's `postgres` user."""
    import pwd
    import tempfile

    bindir = _postgres_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's postgresql is missing: .ci/run must install it")
        pytest.skip("postgresql is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="policydesk-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data, log = root / "data", root / "server.log"
    try:
        subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "policydesk",
                                  "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                                  f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        detail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"postgres did not start: {exc.stderr.decode()[-2000:]} {detail}") from exc
    try:
        yield f"postgresql+psycopg://policydesk@127.0.0.1:{port}"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server):
    """A fresh, empty database on the session's Postgres server; dropped after the test."""
    import uuid

    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield f"{postgres_server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
