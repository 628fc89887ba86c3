"""Replicas on loopback: 2 `policydesk serve` processes + a Chroma server + Postgres, beside 1 embedded process.

    uv run python benchmarks/replicas.py                  # 50 clients, 30 s per phase
    uv run python benchmarks/replicas.py --clients 20 --duration 10 --database-url postgresql+psycopg://...

In one run, on one machine, with the same questions and clients:
  1. load      one `policydesk serve` (embedded Chroma, SQLite), then two replicas (one data dir, a Chroma server,
               Postgres, limits in the store): N clients for D s each; p50/p95, errors, answers stored.
  2. switch    the same load on the replicas while `policydesk ingest` adds a document to the KB: errors, and
               how long after the pointer switch each replica first answers from the new document.
  3. limit     one client asks 3 x the limit as fast as it can, alternating replicas: how many get through.
  4. lookup    cost of one served-generation lookup: the pointer read of the code before this change
               (stat + read + JSON on every call) against today's (one stat).
Every client has its own loopback address (127.0.0.N), so each has its own rate-limit bucket, as real users do.
Postgres is a throw-away server from Debian's binaries unless --database-url is given. Prints tables; --json too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import sqlalchemy as sa
from api import QUESTIONS, free_port, report, stop, wait_http
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
console = Console(stderr=True)
NEW_DOC_ID = "help-stardust-vouchers"
NEW_QUESTION = "How long is a Stardust voucher valid?"
NEW_DOC = ROOT / "tests" / "fixtures" / "switch" / f"{NEW_DOC_ID}.md"  # the article tests/test_replicas.py adds


def start_postgres(root: Path) -> tuple[str, list[str]]:
    """A throw-away Postgres on 127.0.0.1 (Debian's binaries; as `postgres` when we are root); (url, stop cmd)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise SystemExit("Debian's postgresql is not installed (apt-get install postgresql), or pass --database-url")
    bindir, as_user = found[-1].parent, []
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), root / "pg"
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "policydesk",
                              "--no-sync"], check=True, capture_output=True)
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-w", "-o",
                              f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200", "start"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "policydesk",
                              "bench"], check=True, capture_output=True)
    stop_cmd = as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
    return f"postgresql+psycopg://policydesk@127.0.0.1:{port}/bench", stop_cmd


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """One `policydesk serve` process on a free loopback port, once it answers /v1/health."""
    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(BIN / "policydesk"), "serve", "--port", str(port), "--log-level", "warning"],
                                env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/v1/health", proc, 300, f"policydesk serve ({log.name})")
    return proc, f"http://127.0.0.1:{port}"


async def ask(client: httpx.AsyncClient, base: str, question: str, results: list) -> dict:
    """One question; appends (seconds, status, refused, message_id, base, finished at) and returns the body."""
    t0 = time.perf_counter()
    try:
        r = await client.post(f"{base}/v1/ask", json={"question": question, "audience": "public"})
        body = r.json() if r.status_code == 200 else {}
        results.append((time.perf_counter() - t0, r.status_code, bool(body.get("refused")), body.get("message_id"),
                        base, time.time()))
        return body
    except httpx.HTTPError as exc:
        results.append((time.perf_counter() - t0, type(exc).__name__, None, None, base, time.time()))
        return {}


def client_for(address: str) -> httpx.AsyncClient:
    """A client with its own loopback source address (127.x.y.z): its own rate-limit identity."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, timeout=120, trust_env=False)


async def load(bases: list[str], clients: int, duration: float, results: list, net: int, during=None) -> float:
    """`clients` users (127.0.<net>.2...: a fresh set of rate-limit buckets per phase) alternating between bases
    for `duration` s; `during` runs alongside."""
    async def user(n: int, deadline: float) -> None:
        async with client_for(f"127.0.{net}.{n + 2}") as client:
            i = n
            while time.perf_counter() < deadline:
                await ask(client, bases[n % len(bases)], QUESTIONS[i % len(QUESTIONS)], results)
                i += 1

    start = time.perf_counter()
    tasks = [user(n, start + duration) for n in range(clients)]
    await asyncio.gather(*tasks, *([during] if during is not None else []))
    return time.perf_counter() - start


async def switch(bases: list[str], env: dict[str, str], kb: Path, data: Path, delay: float, duration: float,
                 out: dict) -> None:
    """After `delay` s, add a document and ingest it; probe each replica until it answers from the document."""
    await asyncio.sleep(delay)
    shutil.copy(NEW_DOC, kb / "help")
    started = time.time()
    proc = await asyncio.create_subprocess_exec(str(BIN / "policydesk"), "ingest", "--json", env=env, cwd=str(ROOT),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    probes: list = []
    first: dict[str, float] = {}

    async def probe(n: int, base: str) -> None:
        async with client_for(f"127.0.100.{n + 2}") as client:
            while time.time() < started + duration and base not in first:
                body = await ask(client, base, NEW_QUESTION, probes)
                if any(c["doc_id"] == NEW_DOC_ID for c in body.get("citations", [])):
                    first[base] = probes[-1][5]  # when the answer arrived
                await asyncio.sleep(1.0)  # at most 1 request/s: the probe stays inside its rate limit

    probing = [asyncio.create_task(probe(n, b)) for n, b in enumerate(bases)]
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed: {stderr.decode()[-2000:]}")
    switched = (data / "current.json").stat().st_mtime
    await asyncio.gather(*probing)
    out.update(ingest_s=round(switched - started, 1), probes=probes,
               lag_s={b: (round(first[b] - switched, 2) if b in first else None) for b in bases})


async def limit_burst(bases: list[str], per_minute: int) -> tuple[list, float]:
    """One client (127.0.101.2) asks 3 x per_minute questions alternating replicas; (results, seconds)."""
    results: list = []
    start = time.perf_counter()
    async with client_for("127.0.101.2") as client:
        for i in range(3 * per_minute):
            await ask(client, bases[i % len(bases)], QUESTIONS[i % len(QUESTIONS)], results)
    return results, time.perf_counter() - start


def lookup_cost(data: Path, calls: int = 20000) -> dict[str, float]:
    """Microseconds per served-generation lookup: the old pointer read against today's stat (same data dir)."""
    from bot.core.config import Settings
    from bot.ingest.generations import read_pointer
    from bot.ingest.index import KnowledgeIndex

    index = KnowledgeIndex(Settings(data_dir=data))
    index.generation()
    t0 = time.perf_counter()
    for _ in range(calls):
        read_pointer(data)  # what every generation() call did before: stat, read and parse current.json
    old = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    for _ in range(calls):
        index.generation()
    return {"before_us": round(old, 1), "after_us": round((time.perf_counter() - t0) / calls * 1e6, 1)}


def stored(url: str, ids: list) -> dict[str, int]:
    """Answers stored in the store against the 200 answers the clients got."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id FROM messages")).scalars().all()
    engine.dispose()
    got = [i for i in ids if i is not None]
    return {"answers": len(ids), "without_id": len(ids) - len(got), "rows": len(rows),
            "distinct_rows": len(set(rows)), "answers_missing": len(set(got) - set(rows)),
            "ids_repeated": len(got) - len(set(got))}


def summary(results: list, wall: float, args: argparse.Namespace, name: str) -> dict:
    """benchmarks/api.py's figures; an answer without a message id counts as not stored."""
    return report([(r[0], r[1], r[2], r[1] == 200 and r[3] is None) for r in results], wall, args, name)


def row(name: str, r: dict) -> list[str]:
    return [name, str(r["requests"]), f"{r['throughput_rps']:.1f}", str(r["p50_ms"]), str(r["p95_ms"]),
            str(r["p99_ms"]), f"{r['errors']} {r['error_kinds'] or ''}".strip()]


# why: one run of four phases over processes that must all be started, measured and stopped in order
def main() -> None:
    """Start everything, run the phases, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds of load per phase (default 30).")
    ap.add_argument("--limit", type=int, default=60, help="Requests per minute per client (default 60).")
    ap.add_argument("--database-url", help="An existing, empty Postgres database (default: start one).")
    ap.add_argument("--json", action="store_true", help="Also print the results as JSON on stdout.")
    args = ap.parse_args()
    args.workers = 1  # for api.report
    work = Path(tempfile.mkdtemp(prefix="policydesk-replicas-"))
    kb, data, solo = work / "kb", work / "data", work / "solo"
    shutil.copytree(ROOT / "kb", kb)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    base_env.update(POLICYDESK_KB_DIR=str(kb), POLICYDESK_COMPOSER="extractive",
                    POLICYDESK_RATE_LIMIT_PER_MINUTE=str(args.limit))
    out: dict = {"uptime_before": os.getloadavg()}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        pg_url = args.database_url
        if pg_url is None:
            pg_url, stop_cmd = start_postgres(work)
            stack.callback(subprocess.run, stop_cmd, capture_output=True)
        chroma_port = free_port()
        chroma = subprocess.Popen([str(BIN / "chroma"), "run", "--path", str(work / "chroma"), "--host", "127.0.0.1",
                                   "--port", str(chroma_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(stop, chroma)
        wait_http(f"http://127.0.0.1:{chroma_port}/api/v2/heartbeat", chroma, 60, "chroma")
        env = {**base_env, "POLICYDESK_DATA_DIR": str(data), "POLICYDESK_CHROMA_HOST": "127.0.0.1",
               "POLICYDESK_CHROMA_PORT": str(chroma_port), "POLICYDESK_DATABASE_URL": pg_url,
               "POLICYDESK_RATE_LIMIT_SHARED": "true"}
        console.print("ingesting kb/ into the Chroma server ...")
        subprocess.run([str(BIN / "policydesk"), "ingest", "--json"], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        # the single embedded process: same KB, vectors from the cache the first ingest filled
        solo.mkdir()
        shutil.copy(data / "embed_cache.sqlite", solo / "embed_cache.sqlite")
        solo_env = {**base_env, "POLICYDESK_DATA_DIR": str(solo)}
        subprocess.run([str(BIN / "policydesk"), "ingest", "--json"], env=solo_env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        proc, base = serve(solo_env, work / "solo.log")
        console.print(f"load: 1 embedded process, {args.clients} clients, {args.duration:.0f} s")
        res: list = []
        wall = asyncio.run(load([base], args.clients, args.duration, res, net=1))
        out["solo"] = summary(res, wall, args, "1 process, embedded Chroma, SQLite")
        stop(proc)

        replicas = [serve(env, work / f"replica-{n}.log") for n in "ab"]
        for proc, _ in replicas:
            stack.callback(stop, proc)
        bases = [b for _, b in replicas]
        all_ids: list = []
        console.print(f"load: 2 replicas, {args.clients} clients, {args.duration:.0f} s")
        res = []
        wall = asyncio.run(load(bases, args.clients, args.duration, res, net=2))
        out["replicas"] = summary(res, wall, args, "2 replicas, Chroma server, Postgres")
        all_ids += [r[3] for r in res if r[1] == 200]
        console.print("load during an ingest of a changed KB ...")
        res, sw = [], {}
        wall = asyncio.run(load(bases, args.clients, args.duration, res, net=3,
                                during=switch(bases, env, kb, data, 5.0, args.duration + 30, sw)))
        out["switch"] = summary(res + sw["probes"], wall, args, "2 replicas, ingest meanwhile")
        out["switch"].update(ingest_s=sw["ingest_s"], lag_s=list(sw["lag_s"].values()))
        all_ids += [r[3] for r in res + sw["probes"] if r[1] == 200]
        res, secs = asyncio.run(limit_burst(bases, args.limit))
        allowed = [r for r in res if r[1] == 200]
        out["limit"] = {"per_minute": args.limit, "asked": len(res), "allowed": len(allowed),
                        "other": sorted({str(r[1]) for r in res if r[1] not in (200, 429)}),
                        "seconds": round(secs, 1), "refilled_meanwhile": int(secs * args.limit / 60)}
        all_ids += [r[3] for r in allowed]
        out["stored"] = stored(pg_url, all_ids)
        out["lookup"] = lookup_cost(data)
    out["uptime_after"] = os.getloadavg()
    print_tables(out, args)
    if args.json:
        print(json.dumps(out, indent=2, default=str))


def print_tables(out: dict, args: argparse.Namespace) -> None:
    """The four tables."""
    wide = Console(width=200)
    t = Table(title=f"POST /v1/ask, {args.clients} clients x {args.duration:.0f} s (offline extractive composer, "
                    f"loopback; load avg before {out['uptime_before'][0]:.1f}, after {out['uptime_after'][0]:.1f})")
    for col in ("setup", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"):
        t.add_column(col)
    t.add_row(*row("1 process, embedded Chroma, SQLite", out["solo"]))
    t.add_row(*row("2 replicas, Chroma server, Postgres", out["replicas"]))
    t.add_row(*row("2 replicas, ingest of a changed KB meanwhile", out["switch"]))
    wide.print(t)
    s = Table(title="Switch to the new generation (seconds after current.json was replaced)")
    for col in ("ingest took s", "replica A serves new doc", "replica B serves new doc", "errors during switch"):
        s.add_column(col)
    s.add_row(str(out["switch"]["ingest_s"]), *(str(x) for x in out["switch"]["lag_s"]), str(out["switch"]["errors"]))
    wide.print(s)
    st = out["stored"]
    s = Table(title="Answers stored (Postgres messages) against the 200 answers received in the replica phases")
    for col in ("answers", "without message id", "rows", "distinct rows", "answers missing", "ids repeated"):
        s.add_column(col)
    s.add_row(str(st["answers"]), str(st["without_id"]), str(st["rows"]), str(st["distinct_rows"]),
              str(st["answers_missing"]), str(st["ids_repeated"]))
    wide.print(s)
    lim = out["limit"]
    s = Table(title="One client against both replicas")
    for col in ("limit / min", "asked", "allowed", "not 200/429", "seconds", "refilled meanwhile",
                "bound (limit + refill)"):
        s.add_column(col)
    s.add_row(str(lim["per_minute"]), str(lim["asked"]), str(lim["allowed"]), str(lim["other"] or 0), str(lim["seconds"]),
              str(lim["refilled_meanwhile"]), str(lim["per_minute"] + lim["refilled_meanwhile"]))
    wide.print(s)
    lk = out["lookup"]
    s = Table(title="One served-generation lookup (generation() is called several times per request)")
    s.add_column("before: stat + read + parse current.json, us")
    s.add_column("after: one stat, us")
    s.add_row(str(lk["before_us"]), str(lk["after_us"]))
    wide.print(s)


if __name__ == "__main__":
    main()
