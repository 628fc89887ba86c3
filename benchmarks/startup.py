"""Startup benchmark: how long a new process takes to serve an index, and what memory it holds.

    uv run python benchmarks/startup.py --label after --data-dir DIR --kb-dir KB --collection synthetic \
        --json startup.json [--code OTHER_CHECKOUT]

For one data directory and one checkout of the code (--code: another worktree, for a before/after from one
sitting), in fresh processes:
  serve     `policydesk serve` (one worker, embedded Chroma) from start to /v1/health answering 200 (the API
            warms up before it listens: embedder, generation, BM25, masks, leak facts), then one public
            POST /v1/ask; RSS, PSS and private memory of the serve process from /proc/PID/smaps_rollup
  reader    while serve runs, a second process opens the generation, its BM25 and leak facts and runs one
            BM25 search under a public filter mask (no Chroma): per-part seconds and memory; with the state
            memory-mapped its PSS is well below its RSS (pages shared with serve)
  ask       `policydesk ask` as a process, after serve stopped (it owns the embedded store), twice: the cold
            run and a second one with the page cache warm
The machine's load is sampled every second through the run (min / mean / max), since the machine is shared.
Each run appends to --json, and the table printed covers every run in that file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from loadavg import LoadSampler  # benchmarks/ is on sys.path when a script in it runs
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent

READER = """
import json, sys, time
t0 = time.perf_counter()
from bot.core.audience import LeakGuard
from bot.core.config import Settings
from bot.core.models import Audience, Filters
from bot.ingest.index import KnowledgeIndex
t1 = time.perf_counter()
s = Settings(data_dir=sys.argv[1], kb_dir=sys.argv[2], collection=sys.argv[3])
index = KnowledgeIndex(s)
gen = index.require_generation()
t2 = time.perf_counter()
lexical = gen.lexical
t3 = time.perf_counter()
LeakGuard(index).facts()
t4 = time.perf_counter()
f = Filters(audience=Audience.PUBLIC, regions=("EU",))
mask = gen.mask(f)
t5 = time.perf_counter()
hits = lexical.search("refund policy for unused items in the region", 60, mask=mask)
t6 = time.perf_counter()
mem = {}
for line in open("/proc/self/smaps_rollup"):
    parts = line.split()
    if parts[0] in ("Rss:", "Pss:", "Private_Clean:", "Private_Dirty:"):
        mem[parts[0][:-1]] = int(parts[1]) / 1024
print(json.dumps({"chunks": len(gen.chunks), "import_s": t1 - t0, "open_s": t2 - t1, "bm25_s": t3 - t2,
                  "leak_s": t4 - t3, "mask_s": t5 - t4, "search_s": t6 - t5, "hits": len(hits), **mem}))
"""


def memory_of(pid: int) -> dict[str, float]:
    """RSS, PSS and private (clean + dirty) MiB of a process."""
    mem: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:", "Private_Clean:", "Private_Dirty:"):
            mem[parts[0][:-1]] = int(parts[1]) / 1024
    return mem


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_serve(code: Path, env: dict[str, str], args: argparse.Namespace) -> dict:
    """Start serve, wait for health, ask once, run the reader beside it; stop serve."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bot.surfaces.cli", "serve", "--port", str(port),
                             "--log-level", "warning"], cwd=code, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    out: dict = {}
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        out["ready_s"] = time.perf_counter() - started
        t = time.perf_counter()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/ask", json={"question": args.question, "regions": ["EU"]},
                       timeout=120)
        out["first_answer_s"] = time.perf_counter() - t
        out["first_answer_status"] = r.status_code
        out["serve_mem"] = memory_of(proc.pid)
        reader = subprocess.run([sys.executable, "-c", READER, str(args.data_dir), str(args.kb_dir),
                                 args.collection], cwd=code, env=env, capture_output=True, text=True, check=False)
        if reader.returncode != 0:
            raise RuntimeError(f"reader failed: {reader.stderr[-2000:]}")
        out["reader"] = json.loads(reader.stdout.strip().splitlines()[-1])
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def run_ask(code: Path, env: dict[str, str], args: argparse.Namespace) -> list[float]:
    """Seconds of `policydesk ask` as a process, twice."""
    times = []
    for _ in range(2):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bot.surfaces.cli", "ask", args.question, "--audience", "public"],
                       cwd=code, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return times


def table(rows: list[dict]) -> Table:
    """One row per run."""
    t = Table(title="Startup (fresh processes; memory in MiB; load = 1-min load average min / mean / max)")
    for col in ("run", "chunks", "serve ready s", "1st answer s", "serve RSS", "serve PSS", "serve private",
                "reader open+BM25+leak+mask s", "reader RSS", "reader PSS", "ask s (cold, again)", "load"):
        t.add_column(col, justify="right" if col != "run" else "left")
    for r in rows:
        rd = r["reader"]
        sm = r["serve_mem"]
        t.add_row(r["label"], str(rd["chunks"]), f"{r['ready_s']:.1f}", f"{r['first_answer_s']:.2f}",
                  f"{sm['Rss']:.0f}", f"{sm['Pss']:.0f}", f"{sm['Private_Clean'] + sm['Private_Dirty']:.0f}",
                  f"{rd['open_s']:.2f}+{rd['bm25_s']:.2f}+{rd['leak_s']:.2f}+{rd['mask_s']:.3f}",
                  f"{rd['Rss']:.0f}", f"{rd['Pss']:.0f}", " , ".join(f"{x:.1f}" for x in r["ask_s"]), r["load"])
    return t


def main() -> None:
    """Run one configuration, append it to --json, print every run in the file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="Name of this run in the table (e.g. before, after).")
    ap.add_argument("--data-dir", type=Path, required=True, help="The index to serve.")
    ap.add_argument("--kb-dir", type=Path, required=True, help="Its KB folder.")
    ap.add_argument("--collection", default="policydesk", help="Its collection name (POLICYDESK_COLLECTION).")
    ap.add_argument("--code", type=Path, default=ROOT, help="Checkout whose code runs (default: this one).")
    ap.add_argument("--question", default="How do I get a refund for an order I returned?")
    ap.add_argument("--json", type=Path, default=Path("startup.json"), help="Results file (appended).")
    ap.add_argument("--skip-ask", action="store_true", help="Leave out the `policydesk ask` timing.")
    args = ap.parse_args()
    args.data_dir, args.kb_dir = args.data_dir.resolve(), args.kb_dir.resolve()
    env = dict(os.environ, POLICYDESK_DATA_DIR=str(args.data_dir), POLICYDESK_KB_DIR=str(args.kb_dir),
               POLICYDESK_COLLECTION=args.collection, PYTHONPATH=str(args.code.resolve()))
    with LoadSampler() as load:
        row = {"label": args.label, **run_serve(args.code.resolve(), env, args)}
        row["ask_s"] = [] if args.skip_ask else run_ask(args.code.resolve(), env, args)
    row["load"] = load.summary()
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    rows.append(row)
    args.json.write_text(json.dumps(rows, indent=1))
    Console(width=250).print(table(rows))


if __name__ == "__main__":
    main()
