"""Analytics page: what agents and users ask, what the KB cannot answer, and which policies need work."""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import streamlit as st

from bot.core.config import Settings
from bot.core.errors import PolicyDeskError
from bot.surfaces.console import get_index, get_store, user_message
from bot.surfaces.console_auth import require_page

log = logging.getLogger("policydesk.console")

settings = Settings()
identity = require_page("analytics", settings)
index = get_index(settings)
store = get_store(settings)
generation = index.generation()
documents = generation.documents if generation is not None else {}

st.title("Analytics")
WINDOWS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": None}
window_label = st.segmented_control("Window", list(WINDOWS), default="Last 30 days", key="an_window")
days = WINDOWS.get(window_label or "Last 30 days", 30)


def pct(x: float | None) -> str:
    """A rate as a percentage, or a dash when there is no data."""
    return "-" if x is None else f"{x * 100:.0f}%"


def ms(x: float | None) -> str:
    """A latency in milliseconds, or a dash."""
    return "-" if x is None else f"{x:,.0f} ms"


summary = store.summary(days)
c = st.columns(6)
c[0].metric("Questions", summary.questions)
c[1].metric("Answer rate", pct(summary.answer_rate), help="Answered with citations / all questions.")
c[2].metric("Refusal rate", pct(summary.refusal_rate), help="Refused for low confidence / all questions.")
c[3].metric("Feedback score", "-" if summary.feedback_score is None else f"{summary.feedback_score:+.2f}",
            help=f"Mean of thumbs up (+1) and down (-1) over {summary.feedback_count} ratings; "
                 f"{pct(summary.positive_share)} positive (CSAT proxy).")
c[4].metric("Latency p50", ms(summary.latency_p50_ms))
c[5].metric("Latency p95", ms(summary.latency_p95_ms))

st.subheader("Questions per day")
per_day = store.questions_per_day(days if days is not None else None)
if per_day and any(r["questions"] for r in per_day):
    frame = pd.DataFrame(per_day).set_index("day")[["answered", "refused", "errors"]]
    st.bar_chart(frame, color=["#16a34a", "#f59e0b", "#dc2626"], height=260)
else:
    st.info("No questions in this window yet. Ask something on the Console page.")

st.subheader("Content gaps")
st.caption("Refused or down-voted questions, grouped by meaning with the local embedder: each group is content "
           "the knowledge base is missing or explains badly.")
try:
    gaps = store.content_gaps(index.embedder.embed_array, days=days)
except PolicyDeskError as exc:
    gaps = []
    st.error(user_message(exc, settings)[1])
if gaps:
    st.dataframe(pd.DataFrame([{"gap (most asked wording)": g.label, "questions": g.count,
                                "variants": len(g.questions), "last asked": g.last_asked[:16].replace("T", " "),
                                "other wordings": " | ".join(g.questions[1:4])} for g in gaps]),
                 hide_index=True, width="stretch")
else:
    st.success("No unanswered questions in this window.")

st.subheader("Most cited documents")
cited = store.most_cited_documents(days)
if cited:
    st.dataframe(pd.DataFrame([{"document": d.doc_id, "title": d.title, "citations": d.citations,
                                "answers": d.answers, "versions cited": ", ".join(d.versions),
                                "last cited": d.last_cited[:16].replace("T", " ")} for d in cited]),
                 hide_index=True, width="stretch")
else:
    st.info("No citations yet.")

st.subheader("Stale documents still being cited")
st.caption("Cited in this window although past their review date, superseded, removed, or cited in an older "
           "version. Review these first: agents are relying on them.")
stale = store.stale_cited_documents(documents, days, today=date.today())
if stale:
    st.dataframe(pd.DataFrame([{"document": s.doc_id, "title": s.title, "citations": s.citations,
                                "why": "; ".join(s.reasons), "review due": s.review_due,
                                "superseded by": s.superseded_by, "last cited": s.last_cited[:10]}
                               for s in stale]), hide_index=True, width="stretch")
else:
    st.success("No stale document was cited in this window.")
