"""Helpers of the Streamlit agent console (app.py and pages/): pure functions, plus the per-process resources.

Everything that decides *what* the console shows (filters, citation cards, highlighting, copy text, error
messages, progress labels, KB tables) is a plain function here so it can be tested without a Streamlit server.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bot.core.config import Settings
from bot.core.errors import (
    IndexUnavailableError,
    InputRejectedError,
    ModelEndpointError,
    ModelIntegrityError,
    PolicyDeskError,
    StoreError,
)
from bot.core.events import FinalEvent, TextEvent
from bot.core.models import REGIONS, Answer, Audience, Citation, Escalation, Filters

log = logging.getLogger(__name__)

CONSOLE_SURFACE = "console"
REGION_CHOICES = tuple(r for r in REGIONS if r != "global")  # global documents always apply


# ---- filters -----------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~$:])")


def escape_markdown(text: str) -> str:
    """Text typed by a user shown literally by st.markdown (no links, images, colour or emoji directives)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def build_filters(regions: Sequence[str] = (), products: Sequence[str] = (), as_of: date | None = None,
                  include_superseded: bool = False) -> Filters:
    """The console's Filters: agents are always the internal audience; an as-of of today means 'now'."""
    when = None if as_of is None or as_of == date.today() else as_of
    return Filters(audience=Audience.INTERNAL, regions=tuple(regions), products=tuple(p.lower() for p in products),
                   as_of=when, include_superseded=include_superseded)


def product_choices(documents: dict[str, dict[str, Any]]) -> list[str]:
    """Product tags used by the indexed documents, sorted."""
    tags: set[str] = set()
    for doc in documents.values():
        for p in str((doc.get("meta") or {}).get("products") or "").split(","):
            if p.strip():
                tags.add(p.strip())
    return sorted(tags)


# ---- conversation ------------------------------------------------------------------------------------------
def chain_history(turns: Sequence[dict[str, Any]], max_turns: int) -> list[dict[str, str]]:
    """The history the answer chain gets: user and assistant texts of answered turns, newest `max_turns`."""
    out: list[dict[str, str]] = []
    pending: dict[str, str] | None = None
    for t in turns:
        if t.get("role") == "user":
            pending = {"role": "user", "text": str(t.get("text") or "")}
        elif pending is not None and not t.get("error") and t.get("text"):
            # Only complete exchanges: a question whose answer failed would confuse the condenser.
            out.extend([pending, {"role": "assistant", "text": str(t["text"])}])
            pending = None
        else:
            pending = None
    return out[-max_turns:] if max_turns > 0 else []


def stream_text(events, sink: dict[str, Any]):
    """Yield the display text of answer stream events; the final Answer is put in sink['answer']."""
    for event in events:
        if isinstance(event, TextEvent):
            text = event.text
            # Sentence events are the answer's lines without their newline; tokens carry their own spacing.
            yield text + ("\n" if event.kind == "sentence" and not text.endswith("\n") else "")
        elif isinstance(event, FinalEvent):
            sink["answer"] = event.answer


def user_message(exc: BaseException, settings: Settings | None = None) -> tuple[str, str]:
    """(level, text) to show for an error instead of a traceback; level is 'warning' or 'error'."""
    if isinstance(exc, InputRejectedError):
        return "warning", f"{exc} Shorten or rephrase the question and try again."
    if isinstance(exc, IndexUnavailableError):
        return "error", (f"The knowledge base index is not available: {exc} "
                         "Open the **Knowledge base** page and press **Re-sync** to rebuild it.")
    if isinstance(exc, ModelEndpointError):
        where = ""
        if settings is not None and settings.openai_base_url:
            where = f" at {settings.openai_base_url}"
        return "error", (f"The answer model endpoint{where} did not respond: {exc} Check that the server is "
                         "running, or set POLICYDESK_COMPOSER=extractive to answer offline from the KB.")
    if isinstance(exc, ModelIntegrityError):
        return "error", f"The local embedding model is damaged: {exc}"
    if isinstance(exc, StoreError):
        return "error", f"Could not save to the console database: {exc}"
    if isinstance(exc, PolicyDeskError):
        return "error", str(exc)
    return "error", (f"Something went wrong while answering ({type(exc).__name__}). The details are in the "
                     "server log; try again or rephrase the question.")


# ---- citations ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CitationCard:
    """Everything a citation chip opens: the document facts, badges and the highlighted section."""

    number: int
    doc_id: str
    title: str
    section: str
    quote: str
    version: str
    effective_date: str
    regions: tuple[str, ...]
    last_reviewed: str
    review_due: str
    superseded_by: str
    url: str
    doc_type: str
    section_html: str  # the section text with the quoted span in <mark>
    quote_found: bool
    badges: tuple[str, ...] = field(default_factory=tuple)
    chunk_text: str = ""

    @property
    def chip_label(self) -> str:
        """Short label of the numbered chip: title without its version note, and the section it quotes."""
        title = re.sub(r"\s*\([^)]*\)\s*$", "", self.title) or self.title
        leaf = self.section.split(" > ")[-1].strip() if self.section else ""
        label = f"{title} › {leaf}" if leaf and leaf != title else title
        if len(label) > 64:
            label = label[:61].rstrip() + "..."
        warn = " ⚠" if self.badges else ""
        return f"[{self.number}] {label}{warn}"


def _quote_pattern(quote: str) -> re.Pattern[str] | None:
    words = quote.split()
    if not words:
        return None
    # Whitespace-tolerant: a quote that crosses a line break still matches its span.
    return re.compile(r"\s+".join(re.escape(w) for w in words))


def highlight_html(text: str, quote: str) -> tuple[str, bool]:
    """The text as safe HTML with the quoted span wrapped in <mark>; returns (html, quote_found)."""
    pattern = _quote_pattern(quote)
    m = pattern.search(text) if pattern else None
    if m is None:
        # Markdown emphasis or table pipes may sit inside the quote's words; match on the text without them.
        return _escape_lines(text), False
    body = (_escape_lines(text[: m.start()]) + '<mark class="pd-quote">' + _escape_lines(text[m.start(): m.end()])
            + "</mark>" + _escape_lines(text[m.end():]))
    return body, True


_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((?:kb:|https?://)[^)\s]+\)")
_MD_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_MD_CODE = re.compile(r"`([^`\n]+)`")
_MD_BULLET = re.compile(r"(^|<br>)- ")


def _escape_lines(text: str) -> str:
    """Escaped HTML of a piece of Markdown, with links, bold, code and bullets rendered lightly."""
    out = html.escape(text, quote=False).replace("\r", "")
    # Only complete pairs inside this piece are rendered, so a quote boundary never leaves a tag open.
    out = _MD_LINK.sub(r"\1", out)
    out = _MD_BOLD.sub(r"<strong>\1</strong>", out)
    out = _MD_CODE.sub(r"<code>\1</code>", out)
    # <br> rather than newlines: a blank line would end the HTML block inside st.markdown.
    out = out.replace("\n", "<br>")
    return _MD_BULLET.sub(r"\1• ", out)


def citation_badges(review_due: str, superseded_by: str, today: date | None = None) -> tuple[str, ...]:
    """Warnings shown on a citation: past its review date, superseded by a newer document."""
    today = today or date.today()
    badges = []
    if review_due and review_due < today.isoformat():
        badges.append(f"Past review (due {review_due})")
    if superseded_by:
        badges.append(f"Superseded by {superseded_by}")
    return tuple(badges)


def citation_card(citation: Citation, documents: dict[str, dict[str, Any]] | None = None,
                  chunk_text: Callable[[str], str | None] | None = None, today: date | None = None) -> CitationCard:
    """Merge a citation with the index's current metadata for its document and the text of its chunk."""
    meta = ((documents or {}).get(citation.doc_id) or {}).get("meta") or {}

    def pick(key: str) -> str:
        value = getattr(citation, key)
        if value in (None, "", [], ()):
            value = meta.get(key, "")
        return value if isinstance(value, (list, tuple)) else str(value or "")

    regions = pick("regions")
    if isinstance(regions, str):
        regions = tuple(r for r in regions.split(",") if r)
    text = citation.chunk_text or (chunk_text(citation.chunk_id) if chunk_text else None) or ""
    quote = citation.quote
    if text:
        section_html, found = highlight_html(text, quote)
    else:
        section_html, found = '<mark class="pd-quote">' + _escape_lines(quote) + "</mark>", bool(quote)
    review_due, superseded_by = pick("review_due"), pick("superseded_by")
    return CitationCard(
        number=citation.number, doc_id=citation.doc_id, title=pick("title") or citation.doc_id,
        section=citation.section,
        quote=quote, version=pick("version"), effective_date=pick("effective_date"), regions=tuple(regions),
        last_reviewed=pick("last_reviewed"), review_due=review_due, superseded_by=superseded_by,
        url=pick("url"), doc_type=str(meta.get("type") or ""), section_html=section_html, quote_found=found,
        badges=citation_badges(review_due, superseded_by, today), chunk_text=text,
    )


_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


def answer_markdown(text: str) -> str:
    """Answer text for st.markdown: each line its own paragraph, consecutive list items kept as one list."""
    out: list[str] = []
    prev_item = False
    for line in (text or "").split("\n"):
        if not line.strip():
            continue
        item = bool(_LIST_ITEM.match(line))
        if out:
            out.append("\n" if item and prev_item else "\n\n")
        out.append(line)
        prev_item = item
    return "".join(out)


def copy_text(answer: Answer) -> str:
    """Plain text an agent pastes into a ticket: the answer and its numbered sources."""
    lines = [answer.text.strip()]
    if answer.citations:
        lines.append("")
        lines.append("Sources:")
        for c in answer.citations:
            version = f" v{c.version}" if c.version else ""
            link = f" {c.url}" if c.url else ""
            section = f", {c.section}" if c.section else ""
            lines.append(f"[{c.number}] {c.title}{version}{section}{link}")
    return "\n".join(lines)


CAUTION_MARKER = "Closest guidance — not confirmed"


def outcome_marker(answer: Answer) -> str:
    """The marker the console shows above a caution answer ('' for answered and refused turns)."""
    return CAUTION_MARKER if answer.outcome == "caution" else ""


def composer_notice(answer: Answer, settings: Settings | None = None) -> str:
    """A warning when the chat model's answer was not used and the answer fell back to extractive, and why."""
    if answer.composer != "extractive-fallback":
        return ""
    reason = answer.fallback_reason
    if reason and "failed:" not in reason:  # the model answered, but nothing it wrote could be verified
        return (f"The chat model's answer could not be verified against the sources ({reason}), so this answer "
                "was assembled extractively from the knowledge base.")
    where = f" at {settings.openai_base_url}" if settings is not None and settings.openai_base_url else ""
    return (f"The answer model endpoint{where} did not respond, so this answer was assembled extractively "
            f"from the knowledge base. Check that the model server is running.{f' ({reason})' if reason else ''}")


def escalation_text(escalation: Escalation | None) -> str:
    """One line describing the suggested escalation, or '' when there is none."""
    if escalation is None or not (escalation.team or escalation.queue or escalation.priority):
        return ""
    parts = [p for p in (escalation.team, escalation.queue and f"queue {escalation.queue}",
                         escalation.priority and f"priority {escalation.priority}") if p]
    text = "Suggested escalation: " + " · ".join(parts)
    if escalation.reason:
        text += f" ({escalation.reason})"
    return text


# ---- ingest progress ---------------------------------------------------------------------------------------
_STAGES = {"embed": (0.0, 0.85, "Embedding chunks"), "store": (0.85, 0.97, "Writing vectors"),
           "cleanup": (0.97, 1.0, "Cleaning up")}


def progress_fraction(stage: str, done: int, total: int) -> tuple[float, str]:
    """Overall progress in [0, 1] and a label for an index sync callback (stage, done, total)."""
    lo, hi, label = _STAGES.get(stage, (0.0, 1.0, stage))
    frac = lo + (hi - lo) * (done / total if total else 1.0)
    return min(max(frac, 0.0), 1.0), f"{label}: {done}/{total}"


def sync_summary_text(report) -> str:
    """One line describing a SyncReport."""
    s = report.summary()
    return (f"{s['added']} added, {s['updated']} updated, {s['removed']} removed, {s['unchanged']} unchanged, "
            f"{s['failed']} failed; {report.chunks_total} chunks live, {report.chunks_embedded} newly embedded "
            f"in {report.seconds:.1f}s")


def sync_with_progress(index, settings: Settings, running: str, failed: str, done: str, expand_done: bool = False):
    """Run index.sync in a Streamlit status box with a progress bar; the SyncReport, or None after showing the error.

    running / failed / done are the box's labels (done is followed by the sync summary)."""
    import streamlit as st

    with st.status(running, expanded=True) as status:
        bar = st.progress(0.0, text="Loading and chunking documents...")

        def progress(stage: str, n: int, total: int) -> None:
            frac, label = progress_fraction(stage, n, total)
            bar.progress(frac, text=label)

        try:
            report = index.sync(progress=progress)
        except Exception as exc:  # shown to the agent as an actionable message, logged in full
            log.exception("%s", failed)
            status.update(label=failed, state="error", expanded=True)
            st.error(user_message(exc, settings)[1])
            return None
        bar.progress(1.0, text="Done")
        status.update(label=f"{done}{sync_summary_text(report)}", state="complete",
                      expanded=expand_done or bool(report.failed))
    return report


# ---- knowledge-base page ---------------------------------------------------------------------------------
# why: one table row per document; each branch is an optional column
def kb_rows(documents: dict[str, dict[str, Any]], lint_issues: Sequence[Any] = (), kb_dir: Path | None = None,
            today: date | None = None) -> list[dict[str, Any]]:
    """One row per indexed document with its metadata, review state and lint status."""
    today = today or date.today()
    by_path: dict[str, list[Any]] = {}
    for issue in lint_issues:
        by_path.setdefault(str(Path(issue.path).resolve()), []).append(issue)
    rows = []
    for doc_id, doc in sorted(documents.items()):
        m = doc.get("meta") or {}
        path = str(doc.get("path") or m.get("path") or "")
        issues = by_path.get(str(Path(path).resolve()), []) if path else []
        errors = sum(1 for i in issues if i.severity == "error")
        warnings = len(issues) - errors
        status = "error" if errors else ("warning" if warnings else "ok")
        shown_path = path
        if kb_dir is not None:
            try:
                shown_path = str(Path(path).resolve().relative_to(Path(kb_dir).resolve()))
            except ValueError:
                pass
        rows.append({
            "id": doc_id, "title": m.get("title", ""), "type": m.get("type", ""), "audience": m.get("audience", ""),
            "regions": m.get("regions", ""), "products": m.get("products", ""), "version": m.get("version", ""),
            "effective": m.get("effective_date", ""), "last reviewed": m.get("last_reviewed", ""),
            "review due": m.get("review_due", ""),
            "past review": bool(m.get("review_due")) and m.get("review_due", "") < today.isoformat(),
            "superseded by": m.get("superseded_by", ""), "owner": m.get("owner", ""),
            "chunks": len(doc.get("chunk_ids") or []), "lint": status,
            "lint issues": "; ".join(f"{i.field}: {i.problem}" if i.field else i.problem for i in issues),
            "path": shown_path,
        })
    return rows


def unindexed_lint_rows(lint_issues: Sequence[Any], documents: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Lint issues of files that are not in the index (they failed to load), which the table would hide."""
    indexed = {str(Path(d.get("path", "")).resolve()) for d in documents.values() if d.get("path")}
    return [{"severity": i.severity, "path": i.path, "field": i.field, "problem": i.problem}
            for i in lint_issues if str(Path(i.path).resolve()) not in indexed]


# ---- per-process resources (built once, shared by every session) ------------------------------------------
def settings_key(settings: Settings) -> str:
    """A stable key of the settings, so resources are rebuilt when configuration changes."""
    return settings.model_dump_json()


def _cache_resource(fn):
    import streamlit as st

    return st.cache_resource(show_spinner=False)(fn)


@_cache_resource
def _index(key: str, _settings: Settings):
    from bot.ingest.index import KnowledgeIndex

    return KnowledgeIndex(_settings)


@_cache_resource
def _ingest_lock(key: str) -> threading.Lock:
    return threading.Lock()


@_cache_resource
def _store(path_or_url: str):
    from bot.store.sqlite import Store

    return Store(path_or_url)


@_cache_resource
def _service(key: str, _settings: Settings, _index_obj):
    from bot.answer.service import AnswerService

    return AnswerService(_settings, _index_obj)


_INDEX_FIELDS = ("data_dir", "kb_dir", "collection", "chroma_host", "chroma_port", "embedding_provider",
                 "embedding_model", "embedding_batch_size", "chunk_tokens", "chunk_overlap_tokens",
                 "tokenizer_encoding", "openai_base_url")


def get_index(settings: Settings):
    """The process-wide KnowledgeIndex for these settings (answer-only settings share one index)."""
    return _index(settings.model_dump_json(include=set(_INDEX_FIELDS)), settings)


def get_ingest_lock(settings: Settings) -> threading.Lock:
    """Serialises syncs started from several browser sessions of one process."""
    return _ingest_lock(str(settings.data_dir))


def get_store(settings: Settings):
    """The process-wide Store: POLICYDESK_DATABASE_URL when set, else the SQLite file at settings.db_path."""
    return _store(settings.database_url or str(settings.db_path))


def get_service(settings: Settings):
    """The process-wide AnswerService (holds the index, embedder and composers)."""
    return _service(settings_key(settings), settings, get_index(settings))
