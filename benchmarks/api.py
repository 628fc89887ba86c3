"""Load benchmark of POST /v1/ask on loopback: N concurrent clients for a fixed time, offline composer.

    uv run python benchmarks/api.py                       # 50 clients, 30 s, 1 worker, embedded Chroma
    uv run python benchmarks/api.py --workers 2           # 2 workers: starts a Chroma server (or uses
                                                          #   POLICYDESK_CHROMA_HOST/PORT when set)
    uv run python benchmarks/api.py --clients 10 --duration 10 --json

The server runs as `policydesk serve` in a subprocess on 127.0.0.1 with the rate limit raised out of the
way, over a fresh data dir with kb/ ingested (embeddings are seeded from .policydesk/embed_cache.sqlite when
it exists, so nothing is re-embedded). Prints throughput, latency percentiles and errors. The load
generator shares the machine's cores with the server, so figures are a floor for a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from loadavg import LoadSampler  # benchmarks/ is on sys.path when a script in it runs
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console(stderr=True)

# Public help-center questions of the kind the widget gets; a mix of answerable and out-of-scope ones.
QUESTIONS = [
    "How do I turn on two-factor authentication?",
    "How long does a 2FA reset take?",
    "How do I get a refund for coins I bought on the website?",
    "I bought coins in the App Store, can I get a refund?",
    "How do I delete my account?",
    "My account was hacked, what should I do?",
    "How do I change the email address on my account?",
    "How do I appeal a suspension?",
    "How do I request a copy of my data?",
    "My Loopline Shop order never arrived.",
    "How do I return a Shop order in the EU?",
    "How do I cancel a creator subscription?",
    "Someone is threatening to share my private photos.",
    "There is a charge on my card I don't recognise.",
    "When do creators get paid?",
    "How do LIVE gifts work?",
    "I can't log in.",
    "What is the weather in Paris tomorrow?",
    "Which queue handles refund requests over the internal threshold?",
    "Can I pay for coins with PayPal?",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll url until it answers 200, failing early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode} during startup")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen | None) -> None:
    """Terminate a child we started (SIGTERM, then SIGKILL)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def client_loop(client: httpx.AsyncClient, offset: int, deadline: float, results: list) -> None:
    """One simulated user: ask, wait for the answer, ask the next question, until the deadline."""
    i = offset
    while time.perf_counter() < deadline:
        q = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        t0 = time.perf_counter()
        try:
            r = await client.post("/v1/ask", json={"question": q})
            ok = r.status_code == 200
            body = r.json() if ok else {}
            # message_id is null when the answer could not be written to the store (answer still served)
            results.append((time.perf_counter() - t0, r.status_code, bool(body.get("refused")),
                            ok and body.get("message_id") is None))
        except httpx.HTTPError as exc:
            results.append((time.perf_counter() - t0, type(exc).__name__, None, False))


async def run_load(base: str, clients: int, duration: float) -> tuple[list, float]:
    """All clients in parallel for `duration` seconds; returns (results, wall seconds)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits, trust_env=False) as client:
        for q in QUESTIONS[:5]:  # warm caches and the connection pool's first sockets
            await client.post("/v1/ask", json={"question": q})
        results: list = []
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client, n, start + duration, results) for n in range(clients)))
        return results, time.perf_counter() - start


def report(results: list, wall: float, args: argparse.Namespace, mode: str) -> dict:
    """Throughput, latency percentiles and error counts, as a dict and a rich table."""
    lat = np.array([r[0] for r in results if r[1] == 200]) * 1000.0
    errors = Counter(str(r[1]) for r in results if r[1] != 200)
    refused = sum(1 for r in results if r[2])
    not_logged = sum(1 for r in results if r[3])
    out = {
        "clients": args.clients, "workers": args.workers, "index": mode, "duration_s": round(wall, 2),
        "requests": len(results), "ok": int(lat.size), "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "throughput_rps": round(lat.size / wall, 2) if wall else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "max_ms": round(float(lat.max()), 1) if lat.size else None,
        "refused_share": round(refused / lat.size, 3) if lat.size else None,
        "not_logged": not_logged,
        "cpus": os.cpu_count(),
    }
    return out


def main() -> None:
    """Start the server, ingest if needed, run the load, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50, help="Concurrent clients (default 50).")
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds of load (default 30).")
    ap.add_argument("--workers", type=int, default=1,
                    help="Server worker processes (>1 uses a Chroma server).")
    ap.add_argument("--seed-cache", type=Path, default=ROOT / ".policydesk" / "embed_cache.sqlite",
                    help="Embedding cache to copy into the fresh data dir (skips re-embedding kb/).")
    ap.add_argument("--json", action="store_true", help="Print the result as JSON on stdout.")
    ap.add_argument("--code", type=Path, default=ROOT,
                    help="Checkout whose server runs (another worktree, for a before/after from one sitting).")
    args = ap.parse_args()
    code = args.code.resolve()

    work = Path(tempfile.mkdtemp(prefix="policydesk-bench-"))
    data = work / "data"
    data.mkdir()
    if args.seed_cache.exists():
        shutil.copy(args.seed_cache, data / "embed_cache.sqlite")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    env.update(POLICYDESK_DATA_DIR=str(data), POLICYDESK_KB_DIR=str(ROOT / "kb"),
               POLICYDESK_RATE_LIMIT_PER_MINUTE="100000000",  # the benchmark is one client IP: never throttle
               POLICYDESK_COMPOSER="extractive")
    chroma = server = None
    mode = "embedded"
    try:
        if args.workers > 1:
            host = os.environ.get("POLICYDESK_CHROMA_HOST")
            port = os.environ.get("POLICYDESK_CHROMA_PORT", "8000")
            if not host:
                host, port = "127.0.0.1", str(free_port())
                console.print(f"starting a Chroma server on {host}:{port}")
                chroma = subprocess.Popen([str(Path(sys.executable).parent / "chroma"), "run", "--path",
                                           str(work / "chroma"), "--host", host, "--port", port],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_http(f"http://{host}:{port}/api/v2/heartbeat", chroma, 60, "chroma")
            env.update(POLICYDESK_CHROMA_HOST=host, POLICYDESK_CHROMA_PORT=port,
                       POLICYDESK_COLLECTION=f"bench-{os.getpid()}")
            mode = f"chroma server {host}:{port}"
        console.print("ingesting kb/ ...")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bot.surfaces.cli", "ingest", "--json"], env=env, cwd=code, check=True,
                       stdout=subprocess.DEVNULL)
        console.print(f"ingested in {time.perf_counter() - t0:.1f} s")
        api_port = free_port()
        base = f"http://127.0.0.1:{api_port}"
        server = subprocess.Popen([sys.executable, "-m", "bot.surfaces.cli", "serve", "--port", str(api_port),
                                   "--workers", str(args.workers), "--log-level", "warning"],
                                  env=env, cwd=code)
        wait_http(f"{base}/v1/health", server, 180, "policydesk serve")
        console.print(f"load: {args.clients} clients for {args.duration:.0f} s against {base} "
                      f"({args.workers} worker(s), {mode})")
        with LoadSampler() as load:
            results, wall = asyncio.run(run_load(base, args.clients, args.duration))
    finally:
        stop(server)
        stop(chroma)
        shutil.rmtree(work, ignore_errors=True)

    out = report(results, wall, args, mode)
    out["load"] = load.summary()
    out["code"] = str(code)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    table = Table(title="POST /v1/ask under load (offline extractive composer, loopback)")
    for col in ("clients", "workers", "index", "requests", "throughput (req/s)", "p50 ms", "p95 ms", "p99 ms",
                "max ms", "errors", "refused", "not stored", "load min/mean/max"):
        table.add_column(col)
    table.add_row(str(out["clients"]), str(out["workers"]), out["index"], str(out["requests"]),
                  f"{out['throughput_rps']:.1f}", str(out["p50_ms"]), str(out["p95_ms"]), str(out["p99_ms"]),
                  str(out["max_ms"]), f"{out['errors']} {out['error_kinds'] or ''}".strip(),
                  f"{(out['refused_share'] or 0) * 100:.0f}%", str(out["not_logged"]), out["load"])
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
