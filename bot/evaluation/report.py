"""Evaluation reports: Markdown and a self-contained HTML page (inline SVG plots), vs a baseline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from bot.evaluation.catalog import METRICS, TAG_METRICS, is_regression
from bot.evaluation.charts import svg_latency_histogram, svg_metric_bars, svg_tag_breakdown


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def metrics_table(run: dict[str, Any], baseline: dict[str, Any] | None = None, title: str = "") -> Table:
    """The aggregate metrics as a rich table (CLI output), with the baseline and delta when given."""
    table = Table(title=title or run.get("config", {}).get("suite_name", "evaluation"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    if baseline:
        table.add_column("baseline", justify="right")
        table.add_column("delta", justify="right")
    m, b = run["metrics"], (baseline or {}).get("metrics", {})
    for key, label, _, _ in METRICS:
        if key not in m:
            continue
        row = [label, _fmt(m.get(key))]
        if baseline:
            delta = (
                (m[key] - b[key])
                if isinstance(m.get(key), (int, float)) and isinstance(b.get(key), (int, float))
                else None
            )
            mark = "[red]" if is_regression(key, m.get(key), b.get(key)) else ""
            row += [_fmt(b.get(key)), f"{mark}{'' if delta is None else f'{delta:+.3f}'}"]
        table.add_row(*row)
    return table


def failing_cases(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Cases with at least one failure, worst kind first: leaks, errors, wrong refusals, the rest."""

    def rank(c: dict[str, Any]) -> int:
        text = " ".join(c.get("failures", []))
        if "LEAK" in text:
            return 0
        if c.get("error"):
            return 1
        if "refus" in text:
            return 2
        return 3

    return sorted((c for c in run["cases"] if c.get("failures")), key=rank)


def regressions(
    run: dict[str, Any], baseline: dict[str, Any]
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """(metrics that regressed, cases that passed in the baseline and fail now, case ids fixed since)."""
    m, b = run["metrics"], baseline["metrics"]
    metric_regs = [k for k, *_ in METRICS if is_regression(k, m.get(k), b.get(k))]
    base_fail = {c["id"]: bool(c.get("failures")) for c in baseline["cases"]}
    newly = [c for c in run["cases"] if c.get("failures") and base_fail.get(c["id"]) is False]
    fixed = [c["id"] for c in run["cases"] if not c.get("failures") and base_fail.get(c["id"]) is True]
    return metric_regs, newly, fixed


# ------------------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _header_lines(run: dict[str, Any]) -> list[str]:
    cfg = run.get("config", {})
    return [
        f"- Suite: `{cfg.get('suite')}` ({run['metrics']['cases']} cases)",
        f"- Mode: {cfg.get('mode')}, composer: {cfg.get('composer')}, faithfulness judge: {cfg.get('judge')}",
        (f"- Knowledge base: `{cfg.get('kb') or cfg.get('data_dir')}` (hash `{str(run.get('kb_hash'))[:12]}`, "
        f"{cfg.get('kb_documents')} documents, {cfg.get('kb_chunks')} chunks)"),
        f"- Commit: `{run.get('git_commit')}`, started {cfg.get('started_at')}, took {cfg.get('seconds')} s",
    ]


# why: one case's Markdown: each branch is an optional field of the record
def _case_md(c: dict[str, Any]) -> list[str]:
    exp = c.get("expected", {})
    lines = [
        (f"#### `{c['id']}` ({c.get('audience')}{', as of ' + c['as_of'] if c.get('as_of') else ''}"
        f"{', regions ' + ','.join(c['regions']) if c.get('regions') else ''})"),
        "",
    ]
    for turn in c.get("history") or []:
        lines.append(f"> *{turn['role']}:* {_md_escape(turn['text'])}")
    lines += [f"**Q:** {_md_escape(c['question'])}", ""]
    if c.get("answer") is not None:
        state = f"REFUSED ({c.get('refusal_reason')})" if c.get("refused") else "answered"
        lines += [f"**A ({state}):**", ""]
        # two trailing spaces keep each answer line on its own line in rendered Markdown
        answer_lines = [line for line in c["answer"].splitlines() if line.strip()]
        lines += [f"> {line.replace('|', chr(92) + '|')}  " for line in answer_lines]
        lines.append("")
    for cit in c.get("citations", []):
        lines.append(
            f"- [{cit['number']}] `{cit['doc_id']}` ({cit['audience']}"
            f'{"" if cit.get("valid", True) else ", QUOTE NOT FOUND"}): "{_md_escape(cit["quote"])}"'
        )
    lines += [
        "",
        (f"**Expected:** {'refusal' if exp.get('expected_refusal') else 'an answer'}; gold docs "
        f"{exp.get('gold_doc_ids') or 'none'}; facts {exp.get('expected_facts') or 'n/a'}"),
        f"**Retrieved:** {c.get('retrieved', [])[:5]}",
        "",
        "**Why it fails:** " + "; ".join(_md_escape(f) for f in c.get("failures", [])),
        "",
    ]
    return lines


# why: the Markdown report top to bottom; splitting it would scatter the document's order
def render_markdown(run: dict[str, Any], baseline: dict[str, Any] | None = None, max_cases: int = 200) -> str:
    """The Markdown report: header, regressions (with a baseline), metrics, per-tag table, failing cases."""
    cfg = run.get("config", {})
    out = [f"# Evaluation report: {cfg.get('suite_name', 'suite')}", ""] + _header_lines(run) + [""]
    if baseline:
        regs, newly, fixed = regressions(run, baseline)
        out += [
            "## Regressions against the baseline",
            "",
            (f"Baseline: commit `{baseline.get('git_commit')}`, "
            f"KB hash `{str(baseline.get('kb_hash'))[:12]}`."),
            "",
        ]
        if baseline.get("config", {}).get("suite_sha256") != cfg.get("suite_sha256"):
            out += [
                "**The baseline ran a different suite (or another version of it): compare with care.**",
                "",
            ]
        out += [
            f"- Metrics that got worse: {', '.join(regs) if regs else 'none'}",
            f"- Cases that passed in the baseline and fail now: {len(newly)}",
            f"- Cases fixed since the baseline: {len(fixed)}",
            "",
        ]
        for c in newly[:max_cases]:
            out += _case_md(c)
    out += [
        "## Metrics",
        "",
        "| metric | value |" + (" baseline | delta |" if baseline else ""),
        "|---|---:|" + ("---:|---:|" if baseline else ""),
    ]
    for key, label, _, share in METRICS:
        v = run["metrics"].get(key)
        if key not in run["metrics"]:
            continue
        bar = " " + "█" * round(v * 20) if share and v is not None else ""
        row = f"| {label} | {_fmt(v)}{bar} |"
        if baseline:
            bv = baseline["metrics"].get(key)
            delta = f"{v - bv:+.3f}" if isinstance(v, (int, float)) and isinstance(bv, (int, float)) else ""
            flag = " ⚠" if is_regression(key, v, bv) else ""
            row += f" {_fmt(bv)} | {delta}{flag} |"
        out.append(row)
    tags = run.get("by_tag") or {}
    if tags:
        out += [
            "",
            "## By tag",
            "",
            "| tag | n | " + " | ".join(label for _, label in TAG_METRICS) + " | leaks | failing |",
            "|---|---:|" + "---:|" * (len(TAG_METRICS) + 2),
        ]
        for t, m in tags.items():
            out.append(
                f"| {t} | {m['cases']} | "
                + " | ".join(_fmt(m.get(k)) for k, _ in TAG_METRICS)
                + f" | {m.get('leaks')} | {m.get('failed_cases')} |"
            )
    fails = failing_cases(run)
    out += ["", f"## Failing cases ({len(fails)} of {len(run['cases'])})", ""]
    if len(fails) > max_cases:
        out += [f"The first {max_cases} are shown; the run file has them all.", ""]
    for c in fails[:max_cases]:
        out += _case_md(c)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:.92em}
th{background:#f4f6f9;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#c0392b;font-weight:bold}.good{color:#2e8b57}
details{border:1px solid #ddd;border-radius:6px;margin:.5em 0;padding:.4em .8em}
summary{cursor:pointer}.q{font-weight:bold}.ans{background:#f7f7f9;padding:.5em;white-space:pre-wrap}
.reasons{color:#c0392b}.hist{color:#555;font-style:italic}code{background:#f1f3f6;padding:0 3px}
.leak{background:#fdecea}
"""


# why: one case's HTML: each branch is an optional field of the record
def _case_html(c: dict[str, Any]) -> str:
    e = html.escape
    exp = c.get("expected", {})
    leak = any("LEAK" in f for f in c.get("failures", []))
    parts = [
        (f'<details{" open" if leak else ""} class="{"leak" if leak else ""}">'
        f"<summary><code>{e(c['id'])}</code> "
        f'{e(c["question"][:140])} <span class="reasons">— {e("; ".join(c.get("failures", []))[:220])}'
        "</span></summary>")
    ]
    meta = [c.get("audience") or ""]
    if c.get("as_of"):
        meta.append(f"as of {c['as_of']}")
    if c.get("regions"):
        meta.append("regions " + ",".join(c["regions"]))
    parts.append(f"<p>{e(', '.join(meta))} · tags: {e(', '.join(c.get('tags', [])))}</p>")
    for turn in c.get("history") or []:
        parts.append(f'<p class="hist">{e(turn["role"])}: {e(turn["text"])}</p>')
    parts.append(f'<p class="q">Q: {e(c["question"])}</p>')
    if c.get("answer") is not None:
        state = f"refused ({c.get('refusal_reason')})" if c.get("refused") else "answered"
        parts.append(f"<p>Answer ({e(state)}):</p><div class='ans'>{e(c['answer'])}</div>")
    if c.get("citations"):
        parts.append("<table><tr><th>#</th><th>doc</th><th>audience</th><th>quote</th><th>valid</th></tr>")
        for cit in c["citations"]:
            parts.append(
                f"<tr><td>{cit['number']}</td><td><code>{e(cit['doc_id'])}</code></td>"
                f"<td>{e(cit['audience'])}</td><td>{e(cit['quote'])}</td>"
                f"<td>{'yes' if cit.get('valid', True) else '<span class=bad>NO</span>'}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        f"<p><b>Expected:</b> {'a refusal' if exp.get('expected_refusal') else 'an answer'}; gold docs "
        f"<code>{e(', '.join(exp.get('gold_doc_ids') or []) or 'none')}</code>; facts "
        f"{e(' · '.join(exp.get('expected_facts') or []) or 'n/a')}</p>"
    )
    if exp.get("reference_answer"):
        parts.append(f"<p><b>Reference answer:</b> {e(exp['reference_answer'])}</p>")
    parts.append(
        f"<p><b>Retrieved (rank order):</b> <code>{e(', '.join(c.get('retrieved', [])[:10]))}</code></p>"
    )
    uns = c.get("metrics", {}).get("unsupported_sentences") or []
    if uns:
        parts.append(
            "<p><b>Unsupported sentences:</b></p><ul>"
            + "".join(f"<li>{e(u['sentence'])} <i>({e(u['reason'])})</i></li>" for u in uns)
            + "</ul>"
        )
    parts.append("</details>")
    return "".join(parts)


def _code_spans(escaped: str) -> str:
    """Markdown `code` spans in already-escaped text as <code> elements."""
    import re

    return re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)


# why: the HTML report top to bottom; splitting it would scatter the document's order
def render_html(run: dict[str, Any], baseline: dict[str, Any] | None = None, max_cases: int = 500) -> str:
    """A single self-contained HTML page: plots as inline SVG, no scripts, no external resources."""
    e = html.escape
    cfg = run.get("config", {})
    body = [f"<h1>Evaluation report: {e(str(cfg.get('suite_name', 'suite')))}</h1><ul>"]
    body += [f"<li>{_code_spans(e(line[2:]))}</li>" for line in _header_lines(run)] + ["</ul>"]
    if baseline and baseline.get("config", {}).get("suite_sha256") != cfg.get("suite_sha256"):
        body.append(
            "<p class='bad'>The baseline ran a different suite (or another version of it): compare with "
            "care.</p>"
        )
    if baseline:
        regs, newly, fixed = regressions(run, baseline)
        body.append("<h2>Regressions against the baseline</h2>")
        body.append(
            f"<p>Baseline commit <code>{e(str(baseline.get('git_commit')))}</code>. Metrics that got worse: "
            f"<span class='{'bad' if regs else 'good'}'>{e(', '.join(regs) or 'none')}</span>. "
            f"{len(newly)} case(s) passed in the baseline and fail now; {len(fixed)} fixed since.</p>"
        )
        body += [_case_html(c) for c in newly[:max_cases]]
    body.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th>"
        + ("<th>baseline</th><th>delta</th>" if baseline else "")
        + "</tr>"
    )
    for key, label, _, _ in METRICS:
        if key not in run["metrics"]:
            continue
        v = run["metrics"].get(key)
        row = f"<tr><td>{e(label)}</td><td class='num'>{_fmt(v)}</td>"
        if baseline:
            bv = baseline["metrics"].get(key)
            delta = f"{v - bv:+.3f}" if isinstance(v, (int, float)) and isinstance(bv, (int, float)) else ""
            cls = "bad" if is_regression(key, v, bv) else ""
            row += f"<td class='num'>{_fmt(bv)}</td><td class='num {cls}'>{delta}</td>"
        body.append(row + "</tr>")
    body.append("</table>")
    body.append("<h2>Metric bars</h2>" + svg_metric_bars(run, baseline))
    if baseline:
        body.append("<p>Thin grey bars: baseline. Red: regressed.</p>")
    body.append("<h2>Latency</h2>" + svg_latency_histogram(run))
    tags = run.get("by_tag") or {}
    if tags:
        body.append("<h2>By tag</h2>" + svg_tag_breakdown(tags))
        body.append(
            "<table><tr><th>tag</th><th>n</th>"
            + "".join(f"<th>{e(lbl)}</th>" for _, lbl in TAG_METRICS)
            + "<th>leaks</th><th>failing</th></tr>"
        )
        for t, m in tags.items():
            body.append(
                f"<tr><td>{e(t)}</td><td class='num'>{m['cases']}</td>"
                + "".join(f"<td class='num'>{_fmt(m.get(k))}</td>" for k, _ in TAG_METRICS)
                + f"<td class='num {'bad' if m.get('leaks') else ''}'>{m.get('leaks')}</td>"
                f"<td class='num'>{m.get('failed_cases')}</td></tr>"
            )
        body.append("</table>")
    fails = failing_cases(run)
    body.append(f"<h2>Failing cases ({len(fails)} of {len(run['cases'])})</h2>")
    if len(fails) > max_cases:
        body.append(f"<p>The first {max_cases} are shown; the run file has them all.</p>")
    body += [_case_html(c) for c in fails[:max_cases]]
    title = e(f"PolicyDesk evaluation: {cfg.get('suite_name', '')}")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_reports(
    run: dict[str, Any], baseline: dict[str, Any] | None, out_dir: Path | str, stem: str
) -> tuple[Path, Path]:
    """Write <stem>.md and <stem>.html into out_dir; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stem}.md"
    page = out_dir / f"{stem}.html"
    md.write_text(render_markdown(run, baseline), encoding="utf-8")
    page.write_text(render_html(run, baseline), encoding="utf-8")
    return md, page


def summary_rows(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """Rows of a side-by-side metric table for several runs (name, run); first row is the header."""
    rows = [["metric"] + [name for name, _ in runs]]
    for key, label, _, _ in METRICS:
        rows.append([label] + [_fmt(r["metrics"].get(key)) for _, r in runs])
    return rows
