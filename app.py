"""PolicyDesk agent console: `streamlit run app.py`.

The entry point builds the per-process resources, ingests kb/ on first start (with a progress bar), then
routes to the pages: Console (chat), Analytics, Knowledge base and Handoffs.
"""

from __future__ import annotations

import logging

import streamlit as st

from bot.core import config
from bot.core.config import Settings
from bot.core.errors import ConfigError
from bot.surfaces.console import get_index, get_ingest_lock, sync_with_progress

log = logging.getLogger("policydesk.console")

st.set_page_config(page_title="PolicyDesk", page_icon=":material/support_agent:", layout="wide")

CSS = """
<style>
mark.pd-quote { background: #fde68a; padding: 0 2px; border-radius: 3px; }
div.pd-section { font-size: 0.92rem; line-height: 1.5; max-height: 24rem; overflow-y: auto;
                 border-left: 3px solid #e5e7eb; padding-left: 0.75rem; }
</style>
"""


def load_settings() -> Settings | None:
    """Settings from env / policydesk.toml, or None after showing why they are invalid."""
    try:
        return config.load_settings()
    except ConfigError as exc:  # a bad POLICYDESK_* value or policydesk.toml, named with the fix
        st.error(f"PolicyDesk settings are invalid: {exc}")
        return None


def ensure_index(settings: Settings) -> None:
    """Ingest kb/ when the index has never been built (or is empty), showing progress."""
    index = get_index(settings)
    gen = index.generation()
    if gen is not None and gen.chunks:
        return
    with get_ingest_lock(settings):
        gen = index.generation()  # another session may have finished while we waited
        if gen is not None and gen.chunks:
            return
        report = sync_with_progress(index, settings, f"Building the knowledge index from {settings.kb_dir} "
                                    "(first start)...", "Building the knowledge index failed",
                                    "Knowledge index ready: ")
        if report is None:
            return
        for problem in report.failed.values():
            st.warning(f"Not indexed: {problem}")
        st.session_state["first_sync_report"] = report.summary()


def main() -> None:
    """Build resources, make sure the index exists, and run the selected page."""
    st.markdown(CSS, unsafe_allow_html=True)
    settings = load_settings()
    if settings is None:
        st.stop()
    with st.sidebar:
        st.text_input("Signed in as", value="agent", key="agent_name",
                      help="Recorded in the audit log with each question.")
    ensure_index(settings)
    pages = [
        st.Page("pages/console.py", title="Console", icon=":material/forum:", default=True),
        st.Page("pages/analytics.py", title="Analytics", icon=":material/monitoring:"),
        st.Page("pages/knowledge_base.py", title="Knowledge base", icon=":material/library_books:"),
        st.Page("pages/handoffs.py", title="Handoffs", icon=":material/support_agent:"),
    ]
    st.navigation(pages).run()


main()
