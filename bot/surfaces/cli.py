"""The `policydesk` command line: ingest, search, ask, kb lint, stats, eval, serve, team, users."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bot.core.config import Settings, describe_os_error, load_settings
from bot.core.errors import PolicyDeskError
from bot.core.models import Audience, Filters, normalise_regions

app = typer.Typer(help="PolicyDesk: grounded support-policy answers with verified citations.",
                  no_args_is_help=True, add_completion=False)
kb_app = typer.Typer(help="Knowledge-base maintenance.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
users_app = typer.Typer(help="Console users and roles (docs/console-auth.md).", no_args_is_help=True)
app.add_typer(users_app, name="users")
console = Console()
err = Console(stderr=True)


class State:
    """Options shared by every command."""

    data_dir: Path | None = None


_state = State()


@app.callback()
def _root(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Index and store folder "
                                            "(default .policydesk/, env POLICYDESK_DATA_DIR)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _state.data_dir = data_dir


def settings() -> Settings:
    """Settings from env/TOML with the CLI's --data-dir applied."""
    return load_settings(data_dir=_state.data_dir) if _state.data_dir else load_settings()


def parse_filters(audience: str, region: list[str] | None, product: list[str] | None, as_of: str | None,
                  include_superseded: bool = False) -> Filters:
    """Filters from CLI options, with clear errors for bad values."""
    try:
        aud = Audience(audience.lower())
    except ValueError:
        raise typer.BadParameter(f"--audience must be internal or public, not {audience!r}")
    try:
        when = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        raise typer.BadParameter(f"--as-of must be a date YYYY-MM-DD, not {as_of!r}")
    try:
        regions = normalise_regions(region or ())
    except ValueError as exc:
        raise typer.BadParameter(f"--region: {exc}") from exc
    return Filters(audience=aud, regions=regions, products=tuple(p.lower() for p in product or ()),
                   as_of=when, include_superseded=include_superseded)


def run_ingest(s: Settings, paths: list[Path], rebuild: bool, quiet: bool = False):
    """Sync the index with a rich progress bar; returns the SyncReport."""
    from bot.ingest.index import KnowledgeIndex

    index = KnowledgeIndex(s)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=quiet, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task({"embed": "Embedding chunks", "store": "Writing vectors",
                                             "cleanup": "Cleaning up"}.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return index.sync(paths or None, rebuild=rebuild, progress=progress)


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(None, help="Files or folders (default: the kb/ folder)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Re-index everything (embeddings stay cached)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Load, chunk, embed and index knowledge-base documents incrementally."""
    s = settings()
    report = run_ingest(s, list(paths or []), rebuild, quiet=as_json)
    summary = report.summary()
    if as_json:
        console.print_json(json.dumps({**summary, "failures": report.failed, "chunks": report.chunks_total,
                                       "embedded": report.chunks_embedded, "seconds": round(report.seconds, 3)}))
    else:
        table = Table(title=f"Ingest into {s.data_dir}")
        for k in summary:
            table.add_column(k)
        table.add_row(*(str(v) for v in summary.values()))
        console.print(table)
        console.print(f"{report.chunks_total} chunks live, {report.chunks_embedded} newly embedded, "
                      f"{report.seconds:.2f}s")
        for problem in report.failed.values():
            err.print(f"[red]FAILED[/red] {escape(problem)}", soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for."),
    audience: str = typer.Option("internal", help="internal (agents) or public (end users)."),
    region: list[str] = typer.Option(None, "--region", help="EU, UK, US, ROW (repeatable)."),
    product: list[str] = typer.Option(None, "--product", help="Product tag (repeatable)."),
    as_of: str | None = typer.Option(None, "--as-of", help="Policy versions in force on YYYY-MM-DD."),
    include_superseded: bool = typer.Option(False, "--include-superseded"),
    k: int = typer.Option(5, "-k", help="How many passages."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON with a `results` list."),
) -> None:
    """Print the ranked passages for a query, under the requester's filters."""
    from bot.ingest.index import KnowledgeIndex
    from bot.search.retrieval import HybridSearcher

    s = settings()
    filters = parse_filters(audience, region, product, as_of, include_superseded)
    index = KnowledgeIndex(s)
    results = HybridSearcher.from_settings(index, s).search(query, filters, k)
    rows = [{"doc_id": r.chunk.doc_id, "audience": r.chunk.metadata.get("audience"),
             "title": r.chunk.metadata.get("title"), "section": r.chunk.section, "score": round(r.score, 5),
             "version": r.chunk.metadata.get("version"), "effective_date": r.chunk.metadata.get("effective_date"),
             "chunk_id": r.chunk.chunk_id, "text": r.chunk.text} for r in results]
    if as_json:
        print(json.dumps({"query": query, "results": rows}, indent=2))
        return
    if not rows:
        console.print("No passages match these filters.")
    for i, r in enumerate(rows, 1):
        console.print(f"[bold]{i}. {r['title']}[/bold] [dim]({r['doc_id']}, {r['audience']}, "
                      f"v{r['version']}, score {r['score']})[/dim]")
        if r["section"]:
            console.print(f"   [cyan]{r['section']}[/cyan]")
        console.print("   " + r["text"][:400].replace("\n", "\n   "), markup=False, highlight=False)


# why: the ask command's options and its two outputs (table, --json) in one place
@app.command()
def ask(
    question: str = typer.Argument(..., help="The policy question."),
    audience: str = typer.Option("internal", help="internal (agents) or public (end users)."),
    region: list[str] = typer.Option(None, "--region", help="EU, UK, US, ROW (repeatable)."),
    product: list[str] = typer.Option(None, "--product", help="Product tag (repeatable)."),
    as_of: str | None = typer.Option(None, "--as-of", help="Answer with policy versions in force on YYYY-MM-DD."),
    history_file: Path | None = typer.Option(None, "--history-file", help="JSON list of earlier turns "
                                                "[{\"role\": \"user\"|\"agent\", \"text\": ...}]."),
    composer: str | None = typer.Option(None, "--composer", help="extractive (offline) or chat."),
    as_json: bool = typer.Option(False, "--json", help="Print the Answer as JSON."),
) -> None:
    """Answer a question with verified citations (or an honest refusal), under the requester's filters."""
    from bot.answer.service import AnswerService

    s = settings()
    filters = parse_filters(audience, region, product, as_of)
    history = None
    if history_file is not None:
        try:
            history = json.loads(history_file.read_text())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"--history-file {history_file}: not a readable JSON list ({exc})")
    answer = AnswerService(s).ask(question, history, filters, composer)
    if as_json:
        print(json.dumps(answer.to_dict(), indent=2, default=str))
        return
    style = "yellow" if answer.refused else "green"
    console.print(answer.text, style=style, markup=False, highlight=False)
    if answer.refused:
        console.print(f"[dim]refused: {answer.refusal_reason}[/dim]", highlight=False)
        for r in answer.related:
            console.print(f"  related: {r['title']} ({r['doc_id']}) {r['url']}", markup=False, highlight=False)
    for c in answer.citations:
        when = f"v{c.version}" + (f", effective {c.effective_date}" if c.effective_date else "")
        console.print(f"[bold][{c.number}][/bold] {c.title}" + (f" > {c.section}" if c.section else "")
                      + f" [dim]({c.doc_id}, {c.audience.value}, {when})[/dim]", highlight=False)
        if c.url:
            console.print(f"    {c.url}", markup=False, highlight=False)
        console.print(f"    \"{c.quote}\"", markup=False, highlight=False, style="italic")
    if answer.escalation:
        e = answer.escalation
        console.print(f"[cyan]escalate:[/cyan] queue {e.queue or '-'}, priority {e.priority or '-'}, team "
                      f"{e.team or '-'} [dim]({e.source_doc_id}: {e.reason})[/dim]", highlight=False)
    if answer.handoff_offered:
        console.print("[cyan]handoff to a person offered[/cyan]")
    timing = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in answer.timings.items())
    console.print(f"[dim]composer {answer.composer}; confidence {answer.confidence:.2f}; {timing}[/dim]")


@kb_app.command("lint")
def kb_lint(
    paths: list[Path] = typer.Argument(None, help="Folders to check (default: kb/)."),
    as_json: bool = typer.Option(False, "--json"),
    loose: bool = typer.Option(False, "--loose", help="Do not require full front matter (third-party corpora)."),
) -> None:
    """Check front matter, duplicate ids, links between documents, review dates and supersedes chains."""
    from bot.ingest.lint import lint_kb

    s = settings()
    report = lint_kb(list(paths or [s.kb_dir]), strict_fields=not loose, settings=s)
    if as_json:
        print(json.dumps({"documents": report.documents, "errors": len(report.errors),
                          "warnings": len(report.warnings),
                          "issues": [i.__dict__ for i in report.issues]}, indent=2))
    else:
        for i in report.issues:
            colour = "red" if i.severity == "error" else "yellow"
            console.print(f"[{colour}]{i.severity}[/{colour}] {escape(i.path)} \\[{escape(i.field)}] "
                          f"{escape(i.problem)}", highlight=False, soft_wrap=True)
        console.print(f"{report.documents} documents, {len(report.errors)} errors, "
                      f"{len(report.warnings)} warnings")
    if report.errors:
        raise typer.Exit(1)


@app.command()
def stats(as_json: bool = typer.Option(False, "--json")) -> None:
    """Documents and chunks in the index, by audience and type, and the last sync."""
    from bot.ingest.index import KnowledgeIndex

    data = KnowledgeIndex(settings()).stats()
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    table = Table(title="PolicyDesk index")
    table.add_column("what")
    table.add_column("value")
    for k, v in data.items():
        table.add_row(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    console.print(table)


eval_app = typer.Typer(help="Evaluation suites: run them, report on runs, gate CI on thresholds.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("run")
def eval_run(
    suite: Path = typer.Option(..., "--suite", help="JSONL suite (eval/suites/*.jsonl or a corpus qa.jsonl)."),
    out: Path = typer.Option(..., "--out", help="Where to write the run JSON."),
    kb: Path | None = typer.Option(None, "--kb", help="Ingest this folder into its own eval index first "
                                      "(<data-dir>/eval-<hash>); default: the current index."),
    composer: str | None = typer.Option(None, "--composer", help="extractive | chat (default: settings)."),
    retrieval_only: bool = typer.Option(False, "--retrieval-only", help="Measure retrieval alone, no answers."),
    judge: str = typer.Option("auto", "--judge", help="Faithfulness judge: auto (llm when a chat model is "
                              "configured) | offline | llm."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N cases."),
    split: str = typer.Option("all", "--split", help="all | fit | check: one fixed, seeded half of the suite "
                              "(bot/evaluation/split.py; fitted numbers are reported on check, docs/quality.md)."),
) -> None:
    """Answer every case of a suite and write per-case and aggregate metrics to a run file."""
    from bot.evaluation.report import metrics_table
    from bot.evaluation.runner import EvalRunner, eval_index_dir, file_sha256
    from bot.evaluation.split import SPLIT_SEED, SPLITS, select
    from bot.evaluation.suites import load_suite
    from bot.ingest.index import KnowledgeIndex

    if composer is not None and composer not in ("extractive", "chat"):
        raise typer.BadParameter(f"--composer must be extractive or chat, not {composer!r}")
    if judge not in ("auto", "offline", "llm"):
        raise typer.BadParameter(f"--judge must be auto, offline or llm, not {judge!r}")
    if split not in SPLITS:
        raise typer.BadParameter(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    s = settings()
    cases = select(load_suite(suite), split)[:limit]
    name = suite.stem if suite.name != "qa.jsonl" else suite.parent.name
    # a half is gated by its own thresholds section ([suite.kb_agent_check] in eval/thresholds.toml)
    extra: dict = {"suite": str(suite), "suite_name": name if split == "all" else f"{name}_{split}",
                   "suite_sha256": file_sha256(suite), "limit": limit, "kb": None,
                   "split": split, "split_seed": SPLIT_SEED if split != "all" else None}
    if kb is not None:
        if not kb.exists():
            raise typer.BadParameter(f"--kb {kb} does not exist")
        s = s.model_copy(update={"data_dir": eval_index_dir(s, kb), "kb_dir": kb.resolve()})
        report = run_ingest(s, [kb], rebuild=False)
        extra.update(kb=str(kb), ingest={**report.summary(), "seconds": round(report.seconds, 2)})
        if report.failed:
            err.print(f"[yellow]{len(report.failed)} file(s) failed to load[/yellow]; "
                      f"first: {next(iter(report.failed.values()))}", highlight=False)
    runner = EvalRunner(s, KnowledgeIndex(s), mode="retrieval" if retrieval_only else "answer", judge=judge,
                        composer=composer)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(f"Evaluating {suite.name}", total=len(cases))
        run = runner.run(cases, progress=lambda done, total: bar.update(task, completed=done), config=extra)
    run.save(out)
    console.print(metrics_table(run.to_dict(), title=f"{extra['suite_name']}: {len(cases)} cases, "
                                f"{run.config['seconds']}s"))
    console.print(f"Run written to {out}")


@eval_app.command("report")
def eval_report(
    run_file: Path = typer.Argument(..., help="A run JSON from `policydesk eval run`."),
    baseline: Path | None = typer.Option(None, "--baseline", help="An earlier run to compare against."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Folder for the .md and .html "
                                           "(default: next to the run file)."),
) -> None:
    """Write a Markdown and a self-contained HTML report (plots, failing cases, regressions vs a baseline)."""
    from bot.evaluation.report import write_reports
    from bot.evaluation.runner import load_run

    run = load_run(run_file)
    base = load_run(baseline) if baseline else None
    md, html = write_reports(run, base, out_dir or run_file.parent, run_file.stem)
    console.print(f"Wrote {md} and {html}")


@eval_app.command("gate")
def eval_gate(
    run_file: Path = typer.Argument(..., help="A run JSON from `policydesk eval run`."),
    thresholds: Path = typer.Option(Path("eval/thresholds.toml"), "--thresholds", help="Thresholds TOML."),
    suite_set: str | None = typer.Option(None, "--suite-set", help="Threshold section to use "
                                            "(default: the run's suite name)."),
) -> None:
    """Exit 1 when a run's metrics miss the thresholds, naming each metric that failed."""
    from bot.evaluation.gate import gate, load_thresholds
    from bot.evaluation.runner import load_run

    result = gate(load_run(run_file), load_thresholds(thresholds), suite_set)
    for c in result.checks:
        mark = "[green]ok[/green]  " if c["ok"] else "[red]FAIL[/red]"
        console.print(f"{mark} {c['message']}", highlight=False)
    if not result.checks:
        console.print(f"[yellow]No thresholds apply to suite {result.suite!r}[/yellow]")
    if not result.passed:
        err.print(f"[red]Quality gate failed[/red] for {result.suite!r}: "
                  + ", ".join(c["metric"] for c in result.failures), highlight=False)
        raise typer.Exit(1)
    console.print(f"Quality gate passed for {result.suite!r}.")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="Worker processes; more than 1 needs a Chroma server (POLICYDESK_CHROMA_HOST)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    ingest_first: bool = typer.Option(False, "--ingest", help="Sync the KB folder into the index first (waits up "
                                      "to 60 s for a Chroma server starting beside it)."),
) -> None:
    """Start the HTTP API and the help-center widget (demo page at /, OpenAPI docs at /docs)."""
    import os

    import uvicorn

    s = settings()
    if ingest_first:
        from bot.surfaces.team import wait_for_chroma_server

        wait_for_chroma_server(s)
        report = run_ingest(s, [], False, quiet=True)
        for problem in report.failed.values():
            err.print(f"[red]FAILED[/red] {escape(problem)}", soft_wrap=True)
    if workers > 1 and not s.chroma_host:
        # Several processes opening one embedded Chroma directory can hang (chroma issue 7040).
        err.print("[red]error:[/red] --workers > 1 needs a Chroma server, because only one process may own the "
                  "embedded index. Start one with `uv run chroma run --path DIR --host 127.0.0.1 --port 8123`, "
                  "ingest with POLICYDESK_CHROMA_HOST=127.0.0.1 POLICYDESK_CHROMA_PORT=8123 set, and serve with "
                  "the same variables; or run one worker.", highlight=False)
        raise typer.Exit(2)
    if workers == 1:
        from bot.surfaces.api import create_app

        uvicorn.run(create_app(s), host=host, port=port, log_level=log_level, **uvicorn_limits(s))
        return
    if _state.data_dir:
        # Worker processes build their own Settings from the environment; hand --data-dir on that way.
        os.environ["POLICYDESK_DATA_DIR"] = str(_state.data_dir)
    # Each worker process would otherwise keep its own buckets: N workers would let N times the limit through.
    os.environ.setdefault("POLICYDESK_RATE_LIMIT_SHARED", "true")
    uvicorn.run("bot.surfaces.api:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, **uvicorn_limits(s))


def uvicorn_limits(s: Settings) -> dict:
    """The HTTP-edge limits of `serve` (docs/api-limits.md): a bounded header size, and forwarded headers believed
    only from the configured proxies (uvicorn's default believes 127.0.0.1, so any local caller could pick its
    own rate-limit identity)."""
    return {
        "http": "h11",  # httptools reads headers of any size; h11 stops at h11_max_incomplete_event_size
        "h11_max_incomplete_event_size": s.max_header_bytes,
        "proxy_headers": bool(s.trusted_proxies),
        "forwarded_allow_ips": list(s.trusted_proxies) or None,
    }


@app.command()
def team(
    workers: int = typer.Option(2, "--workers", min=1, help="API worker processes."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the API and the console listen on."),
    api_port: int = typer.Option(8080, "--api-port", help="API and widget port."),
    console_port: int = typer.Option(8501, "--console-port", help="Console port."),
    chroma_port: int = typer.Option(8123, "--chroma-port", help="Chroma server port (always on 127.0.0.1)."),
    no_console: bool = typer.Option(False, "--no-console", help="Only the Chroma server and the API workers."),
) -> None:
    """Start and supervise a team setup on this machine: Chroma server, N API workers, console (docs/deploy.md)."""
    from bot.surfaces.team import TeamPorts, run_team

    raise typer.Exit(run_team(settings(), TeamPorts(host, api_port, console_port, chroma_port), workers,
                              console=not no_console))


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="User name, or e-mail address for identity-provider users."),
    role: str = typer.Option("agent", "--role", help="agent (chat), lead (+ analytics, handoffs), "
                             "admin (+ KB re-sync, settings)."),
    oidc: bool = typer.Option(False, "--oidc", help="Signs in through the identity provider only: no password."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin "
                                        "(for scripts) instead of prompting."),
) -> None:
    """Add a console user, or change an existing user's role and password."""
    from bot.surfaces.users import UsersFile

    password: str | None = None
    if not oidc:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    s = settings()
    user = UsersFile(s.users_path).add(name, role, password)
    console.print(f"{user.name}: role {user.role.value}, signs in with {user.method} ({s.users_path}).",
                  highlight=False)


@users_app.command("remove")
def users_remove(name: str = typer.Argument(..., help="User name or e-mail address.")) -> None:
    """Remove a console user; their open console sessions lose access on their next click."""
    from bot.surfaces.users import UsersFile

    s = settings()
    if not UsersFile(s.users_path).remove(name):
        err.print(f"[red]error:[/red] no user {name!r} in {s.users_path}.", highlight=False)
        raise typer.Exit(1)
    console.print(f"Removed {name}.", highlight=False)


@users_app.command("list")
def users_list() -> None:
    """List console users with their role and how they sign in."""
    from bot.surfaces.users import UsersFile

    s = settings()
    users = UsersFile(s.users_path).load()
    if not users:
        console.print(f"No users in {s.users_path}: the console serves 127.0.0.1 only.", highlight=False)
        return
    table = Table("user", "role", "signs in with")
    for u in users.values():
        table.add_row(escape(u.name), u.role.value, u.method)
    console.print(table)


def main() -> None:
    """Entry point of the console script; PolicyDesk errors print as one clear line, not a traceback."""
    try:
        app()
    except PolicyDeskError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # a full disk or a permission problem surfaces from SQLite, Chroma or the OS
        line = describe_os_error(exc, _state.data_dir)
        if line is None:
            raise
        err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
