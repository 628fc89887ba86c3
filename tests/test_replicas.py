"""Two `policydesk serve` processes (stand-ins for two machines, each with its own copy of the index) on
127.0.0.1 sharing one Postgres store: one rate limit per client across both, and every answer stored once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import free_port, stop_process, wait_until_serving

pytestmark = pytest.mark.slow  # two serve processes (each loads the embedder) and a Postgres server; `pytest -m "not slow"` skips it

PER_MINUTE = 10  # refills one token every 6 s, so the test's own duration adds few tokens


@contextmanager
def serve(data_dir: Path, kb_dir: Path, database_url: str, log_path: Path) -> Iterator[str]:
    """`policydesk serve` on a free loopback port with its own data dir and the shared store; yields the URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    env.update(POLICYDESK_DATA_DIR=str(data_dir), POLICYDESK_KB_DIR=str(kb_dir), POLICYDESK_DATABASE_URL=database_url,
               POLICYDESK_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE), POLICYDESK_RATE_LIMIT_SHARED="true")
    exe = Path(sys.executable).parent / "policydesk"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(f"{url}/v1/health", proc, log_path, timeout=300)
            yield url
        finally:
            stop_process(proc, grace=20)


@pytest.mark.server
def test_two_replicas_share_one_rate_limit_and_store_each_answer_once(tmp_path, kb_settings, kb_index,
                                                                       postgres_url):
    with ExitStack() as stack:
        urls = []
        for name in ("a", "b"):
            data = tmp_path / name
            shutil.copytree(kb_settings.data_dir, data)  # one process per embedded Chroma directory
            urls.append(stack.enter_context(serve(data, kb_settings.kb_dir, postgres_url, tmp_path / f"{name}.log")))
        statuses: dict[str, list[int]] = {u: [] for u in urls}
        start = time.time()
        with httpx.Client(timeout=120, trust_env=False) as client:
            for i in range(3 * PER_MINUTE):
                url = urls[i % 2]
                r = client.post(f"{url}/v1/ask", json={"question": "How long do users have to request a refund?"})
                statuses[url].append(r.status_code)
        elapsed = time.time() - start
    allowed = sum(s.count(200) for s in statuses.values())
    assert all(code in (200, 429) for codes in statuses.values() for code in codes), statuses
    # One bucket for this client across both processes: the burst plus what refilled while the test ran.
    # Separate in-memory buckets would have let 2 x PER_MINUTE through.
    assert PER_MINUTE <= allowed <= PER_MINUTE + int(elapsed * PER_MINUTE / 60) + 1, (allowed, elapsed, statuses)
    assert all(429 in codes for codes in statuses.values())
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT id) FROM messages")).one()
    engine.dispose()
    assert tuple(stored) == (allowed, allowed)
