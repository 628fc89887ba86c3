"""`policydesk team` starts the supervised set (Chroma server, API workers, console) on loopback, answers, and
stops every process on SIGTERM; an index built on another Chroma store gets its vectors into the team's server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, stop_process, wait_until_serving

from bot.core.config import Settings
from bot.ingest.index import KnowledgeIndex

pytestmark = pytest.mark.slow  # a Chroma server, two API workers and a Streamlit server


def gone(pgid: int) -> bool:
    """Whether no process is left in the process group (honcho starts each of its processes in its own)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.server
def test_team_starts_the_set_on_loopback_and_stops_it_cleanly(tmp_path, fixture_kb_dir):
    ports = {"api": free_port(), "console": free_port(), "chroma": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    env.update(POLICYDESK_DATA_DIR=str(tmp_path / "data"), POLICYDESK_KB_DIR=str(fixture_kb_dir))
    log_path = tmp_path / "team.log"
    exe = Path(sys.executable).parent / "policydesk"
    with open(log_path, "w") as log:
        team = subprocess.Popen([str(exe), "team", "--workers", "2", "--api-port", str(ports["api"]),
                                 "--console-port", str(ports["console"]), "--chroma-port", str(ports["chroma"])],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{ports['chroma']}/api/v2/heartbeat", team, log_path, timeout=120)
        wait_until_serving(f"http://127.0.0.1:{ports['console']}/_stcore/health", team, log_path, timeout=120)
        wait_until_serving(f"http://127.0.0.1:{ports['api']}/v1/health", team, log_path, timeout=600)
        with httpx.Client(timeout=120, trust_env=False) as client:
            r = client.post(f"http://127.0.0.1:{ports['api']}/v1/ask",
                            json={"question": "How long do I have to request a refund?"})
        assert r.status_code == 200 and r.json()["citations"], r.text
        # the API's vectors are in the team's Chroma server, not in an embedded store
        assert (tmp_path / "data" / "chroma-server").is_dir() and not (tmp_path / "data" / "chroma").exists()
        pids = [int(p) for p in re.findall(r"(?:chroma|api|console) started \(pid=(\d+)\)", log_path.read_text())]
        assert len(pids) == 3, log_path.read_text()
        team.send_signal(signal.SIGTERM)
        assert team.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if team.poll() is None:
            stop_process(team)
    deadline = time.monotonic() + 15
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(p) for p in pids), log_path.read_text()[-3000:]
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False)


@pytest.mark.server
def test_an_unchanged_kb_synced_into_a_new_chroma_server_gets_its_vectors(tmp_path, fixture_settings, fixture_index,
                                                                          chroma_server):
    # an index built with the embedded store (the single-user default), then pointed at a Chroma server
    data = tmp_path / "data"
    shutil.copytree(fixture_settings.data_dir, data, ignore=shutil.ignore_patterns("chroma", "owner.*"))
    host, port = chroma_server
    index = KnowledgeIndex(Settings(data_dir=data, kb_dir=fixture_settings.kb_dir, chroma_host=host,
                                    chroma_port=port, collection=f"moved-{os.getpid()}"))
    report = index.sync()
    assert report.ok, report.failed
    assert index.vector_count() == len(index.require_generation().chunks) > 0
