"""PolicyDesk agent console: `streamlit run app.py`.

The entry point signs the user in (docs/console-auth.md), builds the per-process resources, ingests kb/ on first
start (with a progress bar), then routes to the pages the user's role includes: Console (agent), Analytics and
Handoffs (lead), Knowledge base and Settings (admin).
"""

from __future__ import annotations

import logging

import streamlit as st

from bot.core import config
from bot.core.config import Settings
from bot.core.errors import ConfigError
from bot.surfaces.console import get_index, get_ingest_lock, sync_with_progress
from bot.surfaces.console_auth import resolve_identity, sign_in_page, sign_out

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


PAGES = {
    "console": ("pages/console.py", "Console", ":material/forum:"),
    "analytics": ("pages/analytics.py", "Analytics", ":material/monitoring:"),
    "knowledge_base": ("pages/knowledge_base.py", "Knowledge base", ":material/library_books:"),
    "handoffs": ("pages/handoffs.py", "Handoffs", ":material/support_agent:"),
    "settings": ("pages/settings.py", "Settings", ":material/settings:"),
}


def main() -> None:
    """Sign in, build resources, make sure the index exists, and run the selected page of the user's role."""
    st.markdown(CSS, unsafe_allow_html=True)
    settings = load_settings()
    if settings is None:
        st.stop()
    identity = resolve_identity(settings)
    if identity is None:
        # Anonymous visitors get a navigation with the sign-in page only, so no page under pages/ is reachable.
        st.navigation([st.Page(lambda: sign_in_page(settings), title="Sign in", icon=":material/login:")]).run()
        return
    with st.sidebar:
        st.markdown(f"Signed in as **{identity.name}** ({identity.role.value})")
        if identity.method == "loopback":
            st.caption("No users configured: this console serves this machine (127.0.0.1) only. "
                       "See docs/console-auth.md to add users.")
        else:
            st.button("Sign out", on_click=sign_out, icon=":material/logout:", key="pd_sign_out")
    ensure_index(settings)
    pages = [st.Page(path, title=title, icon=icon, default=page_id == "console")
             for page_id, (path, title, icon) in PAGES.items() if identity.may_open(page_id)]
    st.navigation(pages).run()


main()
