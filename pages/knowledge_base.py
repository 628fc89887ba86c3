"""Knowledge-base page: indexed documents with metadata and lint status, the last sync, and a re-sync button."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from bot.core.config import Settings
from bot.ingest.lint import lint_kb
from bot.surfaces.console import (
    get_index,
    get_ingest_lock,
    kb_rows,
    sync_summary_text,
    sync_with_progress,
    unindexed_lint_rows,
    user_message,
)
from bot.surfaces.console_auth import require_page

log = logging.getLogger("policydesk.console")

settings = Settings()
identity = require_page("knowledge_base", settings)
index = get_index(settings)

st.title("Knowledge base")
st.caption(f"Source folder: `{settings.kb_dir}` · data: `{settings.data_dir}`")


@st.cache_data(show_spinner="Linting the knowledge base...", ttl=300)
def lint(kb_dir: str, generation_name: str | None):
    """Lint issues of kb_dir, recomputed when the served generation changes."""
    report = lint_kb([Path(kb_dir)])
    return report.documents, list(report.issues)


def resync() -> None:
    """Sync the index with the KB folder, showing progress and the result."""
    lock = get_ingest_lock(settings)
    if not lock.acquire(blocking=False):
        st.warning("A sync is already running in this console; wait for it to finish.")
        return
    try:
        report = sync_with_progress(index, settings, "Syncing the knowledge index...", "Sync failed", "Synced: ")
        if report is None:
            return
        st.session_state["kb_sync_message"] = sync_summary_text(report)
        st.session_state["kb_sync_failed"] = dict(report.failed)
    finally:
        lock.release()


if st.button("Re-sync", icon=":material/sync:", type="primary", key="kb_resync",
             help="Add new files, re-index changed ones, remove deleted ones. A file that fails to load keeps its "
                  "last good version."):
    resync()
if st.session_state.get("kb_sync_message"):
    st.success(f"Last re-sync from this console: {st.session_state['kb_sync_message']}")
    for problem in (st.session_state.get("kb_sync_failed") or {}).values():
        st.error(problem)

generation = index.generation()
if generation is None:
    st.warning("Nothing has been indexed yet. Press **Re-sync** to ingest the knowledge base.")
    st.stop()

documents = generation.documents
st.subheader("Last sync")
last = generation.manifest.get("last_sync") or {}
created = generation.manifest.get("created")
cols = st.columns(7)
cols[0].metric("Documents", len(documents))
cols[1].metric("Chunks", len(generation.chunks))
for col, key in zip(cols[2:], ("added", "updated", "removed", "unchanged", "failed")):
    col.metric(key.capitalize(), last.get(key, 0))
st.caption(f"Generation `{generation.name}`"
           + (f", built {datetime.fromtimestamp(created).strftime('%Y-%m-%d %H:%M:%S')}" if created else "")
           + f", embedder `{generation.manifest.get('embedder', '?')}`.")
for problem in (last.get("failed_files") or {}).values():
    st.error(f"Failed to load (serving the last good version if there was one): {problem}")

st.subheader("Documents")
try:
    n_linted, issues = lint(str(settings.kb_dir), generation.name)
except Exception as exc:  # a lint crash must not hide the document table
    log.exception("lint failed")
    n_linted, issues = 0, []
    st.error(user_message(exc, settings)[1])
errors = sum(1 for i in issues if i.severity == "error")
warnings = len(issues) - errors
st.caption(f"Lint: {n_linted} files checked, {errors} errors, {warnings} warnings "
           "(`uv run policydesk kb lint` prints the same report).")

rows = kb_rows(documents, issues, settings.kb_dir)
f1, f2, f3 = st.columns([3, 2, 2])
needle = f1.text_input("Search", placeholder="id, title or owner", key="kb_search").strip().lower()
types = f2.multiselect("Type", sorted({r["type"] for r in rows}), key="kb_types")
only = f3.multiselect("Show only", ["lint errors", "lint warnings", "past review", "superseded"], key="kb_only")
shown = [r for r in rows
         if (not needle or needle in f"{r['id']} {r['title']} {r['owner']}".lower())
         and (not types or r["type"] in types)
         and ("lint errors" not in only or r["lint"] == "error")
         and ("lint warnings" not in only or r["lint"] == "warning")
         and ("past review" not in only or r["past review"])
         and ("superseded" not in only or r["superseded by"])]
st.dataframe(pd.DataFrame(shown), hide_index=True, width="stretch",
             column_config={"past review": st.column_config.CheckboxColumn("past review"),
                            "chunks": st.column_config.NumberColumn("chunks", format="%d")})

orphans = unindexed_lint_rows(issues, documents)
if orphans:
    st.subheader("Files not in the index")
    st.dataframe(pd.DataFrame(orphans), hide_index=True, width="stretch")
