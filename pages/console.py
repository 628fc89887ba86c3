"""Console page: ask a policy question, read the cited answer, open the sources, copy, rate."""

from __future__ import annotations

import logging
import uuid
from datetime import date
from typing import Any

import streamlit as st

from bot.core.config import Settings
from bot.core.errors import PolicyDeskError, StoreError
from bot.core.models import Answer
from bot.surfaces.console import (
    CONSOLE_SURFACE,
    REGION_CHOICES,
    answer_markdown,
    build_filters,
    chain_history,
    citation_card,
    composer_notice,
    copy_text,
    escalation_text,
    escape_markdown,
    get_index,
    get_service,
    get_store,
    outcome_marker,
    product_choices,
    stream_text,
    user_message,
)
from bot.surfaces.console_auth import require_page

log = logging.getLogger("policydesk.console")

settings = Settings()
identity = require_page("console", settings)
index = get_index(settings)
store = get_store(settings)
generation = index.generation()
documents: dict[str, dict[str, Any]] = generation.documents if generation is not None else {}


def agent() -> str:
    """Who is asking, for the audit log."""
    return identity.name  # the signed-in identity (docs/console-auth.md), never a free-text name


def chunk_text(chunk_id: str) -> str | None:
    """Text of a chunk of the served generation (citations carry it, this is the fallback)."""
    if generation is None or chunk_id not in generation.by_id:
        return None
    return generation.chunks[generation.by_id[chunk_id]].text


def new_conversation() -> None:
    """Forget the chat and start a new conversation id."""
    st.session_state["turns"] = []
    st.session_state["conversation_id"] = uuid.uuid4().hex


if "turns" not in st.session_state:
    new_conversation()

# ---- sidebar: filters ----------------------------------------------------------------------------------------
with st.sidebar:
    st.subheader("Filters")
    regions = st.multiselect("Region", REGION_CHOICES, key="f_regions",
                             help="Global documents always apply; pick the customer's region to add its rules.")
    products = st.multiselect("Product", product_choices(documents), key="f_products")
    as_of = st.date_input("Policy as of", value=date.today(), key="f_as_of",
                          help="Answer with the policy versions in force on this date.")
    st.caption("Audience: internal (agents see SOPs and public articles).")
    st.button("New conversation", on_click=new_conversation, icon=":material/add_comment:")
    if generation is not None:
        st.caption(f"Index: {len(documents)} documents, {len(generation.chunks)} chunks.")

filters = build_filters(regions, products, as_of if isinstance(as_of, date) else None)


# ---- rendering ----------------------------------------------------------------------------------------------
def save_feedback(turn_index: int, rating: int) -> None:
    """Button callback: store the rating and the optional reason of one answer."""
    turn = st.session_state["turns"][turn_index]
    reason = st.session_state.get(f"reason_{turn['message_id']}") or None
    try:
        store.add_feedback(st.session_state["conversation_id"], turn["message_id"], rating, reason, user=agent())
    except PolicyDeskError as exc:
        turn["feedback_error"] = user_message(exc)[1]
        return
    turn["rating"] = rating
    turn.pop("feedback_error", None)


def render_citation(card) -> None:
    """The body of a citation chip: document facts, badges, the section with the quote highlighted."""
    st.markdown(f"**{card.title}**")
    if card.section:
        st.caption(card.section)
    for badge in card.badges:
        st.markdown(f":orange-badge[:material/warning: {badge}]")
    facts = [
        f"Version **{card.version or '-'}**",
        f"effective **{card.effective_date or '-'}**",
        f"regions **{', '.join(card.regions) or '-'}**",
        f"last reviewed **{card.last_reviewed or '-'}**",
    ]
    if card.review_due:
        facts.append(f"review due {card.review_due}")
    st.markdown(" · ".join(facts))
    st.markdown(f'<div class="pd-section">{card.section_html}</div>', unsafe_allow_html=True)
    if card.doc_type == "macro" and card.chunk_text:
        st.caption("Macro text (copy with the icon):")
        st.code(card.chunk_text, language=None, wrap_lines=True)
    if card.url:
        st.markdown(f"[Open {card.doc_id}]({card.url})")


# why: renders an answer top to bottom as the agent reads it
def render_answer(turn: dict[str, Any], turn_index: int) -> None:
    """An answered turn: text, escalation, citation chips, copy box, feedback."""
    a = turn["answer"]
    notice = composer_notice(a, settings)
    if notice:
        st.warning(notice, icon=":material/cloud_off:")
    marker = outcome_marker(a)
    if marker:  # caution: relevant guidance, but the exact detail asked for is not in the knowledge base
        st.warning(f"**{marker}**", icon=":material/help:")
    st.markdown(answer_markdown(a.text) or "_(no answer text)_")
    if a.refused:
        st.caption(f"No confident answer from the knowledge base ({a.refusal_reason or 'low confidence'}).")
        related = a.related
        if related:
            st.markdown("Closest articles: " + ", ".join(
                f"[{r.get('title') or r.get('doc_id')}]({r['url']})" if r.get("url") else str(r.get("title"))
                for r in related))
    esc = escalation_text(a.escalation)
    if esc:
        st.info(esc, icon=":material/call_split:")
    cites = a.citations
    if cites:
        st.markdown("**Sources**")
        with st.container(horizontal=True, wrap=True, gap="small"):
            for c in cites:
                card = citation_card(c, documents, chunk_text)
                with st.popover(card.chip_label, width="content", key=f"cite_{turn_index}_{card.number}"):
                    render_citation(card)
    with st.expander("Copy answer", icon=":material/content_copy:"):
        st.code(copy_text(a), language=None, wrap_lines=True)
    timings = a.timings
    meta = [f"composer {a.composer or '-'}", f"confidence {a.confidence:.2f}"]
    if timings.get("total") is not None:
        meta.append(f"{float(timings['total']) * 1000:.0f} ms")
    st.caption(" · ".join(meta))
    mid = turn.get("message_id")
    if mid is None:
        return
    c_up, c_down, c_reason = st.columns([1, 1, 8])
    c_up.button(":material/thumb_up:", key=f"up_{mid}", help="Helpful", on_click=save_feedback,
                args=(turn_index, 1), type="primary" if turn.get("rating") == 1 else "secondary")
    c_down.button(":material/thumb_down:", key=f"down_{mid}", help="Not helpful", on_click=save_feedback,
                  args=(turn_index, -1), type="primary" if turn.get("rating") == -1 else "secondary")
    c_reason.text_input("Reason (optional)", key=f"reason_{mid}", label_visibility="collapsed",
                        placeholder="Optional: why was it (not) helpful?")
    if turn.get("feedback_error"):
        st.error(turn["feedback_error"])
    elif turn.get("rating"):
        st.caption("Feedback saved: " + ("helpful" if turn["rating"] == 1 else "not helpful") + ". Thank you.")


def render_turn(turn: dict[str, Any], turn_index: int) -> None:
    """One stored turn of the chat."""
    if turn["role"] == "user":
        with st.chat_message("user"):
            st.markdown(escape_markdown(turn["text"]))
        return
    with st.chat_message("assistant"):
        if turn.get("error"):
            (st.warning if turn.get("level") == "warning" else st.error)(turn["error"])
        else:
            render_answer(turn, turn_index)


def ask(question: str) -> None:
    """Stream the answer to question, store it, and append both turns to the chat."""
    turns: list[dict[str, Any]] = st.session_state["turns"]
    history = chain_history(turns, settings.max_history_turns)
    conversation_id = st.session_state["conversation_id"]
    user_turn = {"role": "user", "text": question}
    with st.chat_message("user"):
        st.markdown(escape_markdown(question if len(question) <= 2000 else question[:2000] + " ..."))
    with st.chat_message("assistant"):
        slot = st.empty()
        sink: dict[str, Any] = {}
        try:
            from bot.answer.safety import validate_question

            validate_question(question, history, settings)
            service = get_service(settings)
            with slot.container():
                st.write_stream(stream_text(service.stream(question, history, filters), sink))
            if "answer" not in sink:
                raise PolicyDeskError("The answer stream ended without a final answer; try again.")
        except Exception as exc:
            if not isinstance(exc, PolicyDeskError):
                log.exception("answering failed")
            level, text = user_message(exc, settings)
            slot.empty()
            (st.warning if level == "warning" else st.error)(text)
            turns.extend([user_turn, {"role": "assistant", "error": text, "level": level}])
            try:
                store.log_question(conversation_id, question, CONSOLE_SURFACE, user=agent(), error=str(exc))
            except StoreError:
                log.exception("could not log a failed question")
            return
        answer: Answer = sink["answer"]
        turn: dict[str, Any] = {"role": "assistant", "text": answer.text, "answer": answer}
        try:
            turn["message_id"] = store.log_answer(conversation_id, question, answer, CONSOLE_SURFACE, user=agent())
        except StoreError as exc:
            st.warning(user_message(exc)[1])
        turns.extend([user_turn, turn])
        with slot.container():
            render_answer(turn, len(turns) - 1)


# ---- page --------------------------------------------------------------------------------------------------
st.title("PolicyDesk console")
if generation is None or not generation.chunks:
    st.warning(f"The knowledge base index is empty: no documents were found in {settings.kb_dir}. Add Markdown, "
               "HTML, PDF or DOCX files there and press **Re-sync** on the Knowledge base page.")
if not st.session_state["turns"]:
    st.caption("Ask about a support policy: refunds, account access, privacy requests, appeals, payouts. "
               "Answers quote the SOPs and help articles they rely on; open a numbered source to see the passage.")

for i, t in enumerate(st.session_state["turns"]):
    render_turn(t, i)

prompt = st.chat_input("Ask a policy question...", disabled=generation is None or not generation.chunks)
if prompt is not None:
    ask(prompt)
