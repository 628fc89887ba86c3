"""Handoffs page: help-center conversations handed to a human, with transcripts; claim, close, reopen."""

from __future__ import annotations

import streamlit as st

from bot.core.config import Settings
from bot.core.errors import PolicyDeskError
from bot.surfaces.console import escape_markdown, get_store, user_message
from bot.surfaces.console_auth import require_page

settings = Settings()
identity = require_page("handoffs", settings)
store = get_store(settings)


def agent() -> str:
    """The agent acting on the queue."""
    return identity.name  # the signed-in identity (docs/console-auth.md), never a free-text name


def move(action: str, handoff_id: int) -> None:
    """Button callback: claim, close or reopen a handoff; errors are shown, not raised."""
    try:
        if action == "claim":
            store.claim_handoff(handoff_id, agent())
        elif action == "close":
            store.close_handoff(handoff_id, agent(), st.session_state.get(f"ho_note_{handoff_id}") or None)
        else:
            store.reopen_handoff(handoff_id, agent())
        st.session_state["ho_flash"] = ("success", f"Handoff #{handoff_id}: {action} done.")
    except PolicyDeskError as exc:
        st.session_state["ho_flash"] = ("error", user_message(exc)[1])


st.title("Handoffs")
st.caption("Help-center conversations the widget handed to a human. Transcripts are stored with personal data "
           "redacted; the contact is kept so you can reply.")

counts = store.handoff_counts()
c = st.columns(3)
c[0].metric("Open", counts["open"])
c[1].metric("Claimed", counts["claimed"])
c[2].metric("Closed", counts["closed"])

flash = st.session_state.pop("ho_flash", None)
if flash:
    (st.success if flash[0] == "success" else st.error)(flash[1])

STATUS = {"Open": "open", "Claimed": "claimed", "Closed": "closed", "All": None}
choice = st.radio("Show", list(STATUS), horizontal=True, key="ho_status")
handoffs = store.list_handoffs(STATUS[choice])
if not handoffs:
    st.info("No handoffs here. When a help-center user asks for a person, their conversation appears in this queue.")

for h in handoffs:
    who = f" · claimed by {h.claimed_by}" if h.claimed_by and h.status != "open" else ""
    label = f"#{h.id} · {h.status}{who} · {h.created_at[:16].replace('T', ' ')} UTC"
    if h.reason:
        label += f" · {escape_markdown(h.reason[:60])}"
    with st.expander(label, expanded=h.status == "open" and len(handoffs) <= 5):
        contact = escape_markdown(h.contact) if h.contact else "_none given_"
        st.markdown(f"**Contact:** {contact}  \n**Conversation:** {escape_markdown(h.conversation_id)}")
        if h.reason:
            st.markdown(f"**Reason:** {escape_markdown(h.reason)}")
        st.markdown("**Transcript**")
        if not h.transcript:
            st.caption("(empty)")
        for turn in h.transcript:
            role = "user" if turn.get("role") in ("user", "human") else "assistant"
            with st.chat_message(role):
                st.markdown(escape_markdown(turn.get("text") or ""))
        if h.closed_note:
            st.caption(f"Note: {h.closed_note}")
        b1, b2, b3 = st.columns([1, 1, 3], vertical_alignment="bottom")
        if h.status == "open":
            b1.button("Claim", key=f"ho_claim_{h.id}", on_click=move, args=("claim", h.id), type="primary")
        elif h.status == "claimed":
            b1.button("Release", key=f"ho_release_{h.id}", on_click=move, args=("reopen", h.id),
                      help="Put it back in the open queue.")
        if h.status in ("open", "claimed"):
            b3.text_input("Closing note", key=f"ho_note_{h.id}", placeholder="Optional: what was done")
            b2.button("Close", key=f"ho_close_{h.id}", on_click=move, args=("close", h.id))
        else:
            b2.button("Reopen", key=f"ho_reopen_{h.id}", on_click=move, args=("reopen", h.id))
