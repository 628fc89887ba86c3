"""`policydesk team`: one command for a single-machine team setup, supervised by honcho (a Procfile runner).

It starts three processes and prints their output with a name prefix:
  chroma   `chroma run` over <data_dir>/chroma-server on loopback: the vectors every process shares
  api      `policydesk serve --ingest --workers N`: syncs the KB into the server, then N API workers
  console  `streamlit run app.py`: the agent console (sign-in rules of docs/console-auth.md apply)
honcho stops the whole set when any process exits and on Ctrl-C / SIGTERM, so the set is never half up; uvicorn
restarts an API worker that dies. Restart-on-failure of the set is systemd's job (docs/deploy.md).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bot.core.config import Settings
from bot.core.errors import IndexUnavailableError

REPO = Path(__file__).resolve().parent.parent.parent  # where app.py lives
STOPPED_BY_SIGNAL = (130, 143)  # honcho's return codes after SIGINT / SIGTERM: a requested stop


@dataclass(frozen=True)
class TeamPorts:
    """Where the set listens."""

    host: str = "127.0.0.1"
    api: int = 8080
    console: int = 8501
    chroma: int = 8123


def team_processes(settings: Settings, ports: TeamPorts, workers: int,
                   console: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> shell command, environment) of the supervised set; every process reads the same settings."""
    bindir = Path(sys.executable).parent
    data_dir = Path(settings.data_dir).resolve()
    env = dict(os.environ)
    env.update(POLICYDESK_DATA_DIR=str(data_dir), POLICYDESK_CHROMA_HOST="127.0.0.1",
               POLICYDESK_CHROMA_PORT=str(ports.chroma), POLICYDESK_RATE_LIMIT_SHARED="true",
               PYTHONUNBUFFERED="1")
    procs = {
        # the Chroma server stays on loopback: only this machine's processes reach the vectors
        "chroma": shlex.join([str(bindir / "chroma"), "run", "--path", str(data_dir / "chroma-server"),
                              "--host", "127.0.0.1", "--port", str(ports.chroma)]),
        "api": shlex.join([str(bindir / "policydesk"), "serve", "--ingest", "--host", ports.host,
                           "--port", str(ports.api), "--workers", str(workers)]),
    }
    if console:
        procs["console"] = shlex.join([str(bindir / "streamlit"), "run", str(REPO / "app.py"),
                                       "--server.address", ports.host, "--server.port", str(ports.console),
                                       "--server.headless", "true", "--browser.gatherUsageStats", "false"])
    return procs, env


def wait_for_chroma_server(settings: Settings, timeout: float = 60.0) -> None:
    """Return once the configured Chroma server answers its heartbeat (it starts beside us in `team`), or raise
    IndexUnavailableError after timeout seconds."""
    if not settings.chroma_host:
        return
    url = f"http://{settings.chroma_host}:{settings.chroma_port}/api/v2/heartbeat"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise IndexUnavailableError(f"The Chroma server at {settings.chroma_host}:{settings.chroma_port} did "
                                        f"not answer within {timeout:.0f} s; is it running?")
        time.sleep(0.5)


def run_team(settings: Settings, ports: TeamPorts, workers: int, console: bool = True) -> int:
    """Start and supervise the set until one process exits or we are asked to stop; returns the exit code."""
    from honcho.manager import Manager

    procs, env = team_processes(settings, ports, workers, console)
    manager = Manager()
    for name, cmd in procs.items():
        manager.add_process(name, cmd, env=env, cwd=str(REPO))
    manager.loop()  # blocks; SIGINT/SIGTERM stop every process (SIGKILL after 5 s)
    return 0 if manager.returncode in STOPPED_BY_SIGNAL else int(manager.returncode or 0)

