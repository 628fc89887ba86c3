"""What the routes share (ApiContext) and the steps both answer routes take: prepare the request under the
caller's rights, check a public answer once more, store the turn, shape the response body."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

import anyio
from fastapi import Request

from bot.answer.safety import redact_pii, validate_question
from bot.core.audience import LeakGuard, blocked_answer
from bot.core.config import Settings
from bot.core.errors import PolicyDeskError
from bot.core.models import Answer, Audience, Filters
from bot.surfaces.api.auth import Caller, StoreLimiter, TokenBucketLimiter
from bot.surfaces.api.schemas import AskRequest

log = logging.getLogger(__name__)

SURFACE_HEADER = "X-PolicyDesk-Surface"  # the widget sends "widget" so analytics can tell it from API callers


@dataclass
class ApiContext:
    """Everything the routes share, built once per app (no module-level state)."""

    settings: Settings
    service: Any  # bot.answer.service.AnswerService
    index: Any  # bot.ingest.index.KnowledgeIndex
    store: Any  # bot.store.sqlite.Store
    guard: LeakGuard  # the answer service's own guard when it has one (one set of facts per process)
    limiter: TokenBucketLimiter | StoreLimiter
    api_keys: tuple[str, ...]
    work_limiter: anyio.CapacityLimiter | None = None  # bounds concurrent CPU-bound answer work


def surface_of(request: Request) -> str:
    """Which surface asked, for the store's analytics."""
    return "widget" if request.headers.get(SURFACE_HEADER, "").lower() == "widget" else "api"


def prepare(ctx: ApiContext, body: AskRequest,
            who: Caller) -> tuple[Filters, str, list[dict[str, str]], str]:
    """Filters under the caller's rights, the validated question and history, and the conversation id."""
    # Anonymous callers get PUBLIC whatever the body says: the body is not a credential.
    audience = Audience.PUBLIC
    if who.authenticated and body.audience != "public":
        audience = Audience.INTERNAL
    filters = Filters(audience=audience, regions=tuple(body.regions), products=tuple(body.products),
                      as_of=body.as_of)
    question, history = validate_question(body.question, [t.as_dict() for t in body.history], ctx.settings)
    log.info("ask audience=%s caller=%s chars=%d history=%d q=%r", audience.value, who.key_id or "anonymous",
             len(question), len(history), redact_pii(question)[:200])
    return filters, question, history, body.conversation_id or uuid.uuid4().hex


def final_check(ctx: ApiContext, answer: Answer, filters: Filters) -> Answer:
    """Public answers pass the leak check (again: the service checked them) or are replaced by a refusal;
    every blocked answer is audited. Internal answers pass through."""
    if filters.audience is not Audience.PUBLIC:
        return answer
    if not answer.blocked_reasons:
        verdict = ctx.guard.check(answer)
        if not verdict.leaked:
            return replace(answer, escalation=None)  # routing (queues, teams) is for agents only
        answer = blocked_answer(answer, ctx.guard.public_related(answer), verdict.reasons)
    log.error("SECURITY: public answer blocked before leaving the API: %s", "; ".join(answer.blocked_reasons[:5]))
    try:
        ctx.store.audit("public_leak_blocked", surface="api", detail="; ".join(answer.blocked_reasons)[:2000])
    except Exception as exc:  # noqa: BLE001 - the block itself must not depend on the audit write
        log.error("could not audit the blocked answer: %s", exc)
    return answer


def response_body(answer: Answer, audience: Audience, cid: str, message_id: int | None) -> dict[str, Any]:
    """The AskResponse body; public responses carry only what end users may see."""
    public = audience is Audience.PUBLIC
    cits = []
    for c in answer.citations:
        out: dict[str, Any] = {"number": c.number, "doc_id": c.doc_id, "title": c.title, "section": c.section,
                               "quote": c.quote, "url": c.url, "audience": Audience(c.audience).value,
                               "version": c.version, "effective_date": c.effective_date, "chunk_id": c.chunk_id}
        if not public:
            out.update(regions=list(c.regions), last_reviewed=c.last_reviewed, review_due=c.review_due,
                       superseded_by=c.superseded_by)
        cits.append(out)
    related = [{"doc_id": str(r.get("doc_id", "")), "title": str(r.get("title", "")),
                "url": str(r.get("url") or "")} for r in answer.related]
    escalation = asdict(answer.escalation) if answer.escalation is not None and not public else None
    return {
        "answer": answer.text, "refused": answer.refused,
        # the widget never shows caution: a public answer is answered or refused whatever the record says
        "outcome": ("refused" if answer.refused else "answered") if public else answer.outcome,
        "refusal_reason": answer.refusal_reason,
        "confidence": float(answer.confidence), "citations": cits, "related": related,
        "handoff_offered": answer.handoff_offered, "escalation": escalation, "audience": audience.value,
        "conversation_id": cid, "message_id": message_id, "composer": answer.composer,
        "fallback_reason": "" if public else answer.fallback_reason,  # may name the model endpoint
        "standalone_question": answer.standalone_question,
        "timings": {k: float(v) for k, v in answer.timings.items() if isinstance(v, (int, float))},
    }


async def log_answer(ctx: ApiContext, cid: str, question: str, answer: Answer, surface: str,
                     who: Caller) -> int | None:
    """Store the (redacted) turn; a store problem costs the message id, never the answer."""
    try:
        return await anyio.to_thread.run_sync(
            lambda: ctx.store.log_answer(cid, question, answer, surface, user=who.key_id))
    except Exception as exc:  # noqa: BLE001 - a store problem costs the message id, never the answer
        log.error("answer not stored (conversation %s): %s", cid, exc)
        return None


async def log_failure(ctx: ApiContext, cid: str, question: str, surface: str, who: Caller,
                      exc: PolicyDeskError) -> None:
    """Store a question that could not be answered, with its error; a store problem is only logged."""
    try:
        await anyio.to_thread.run_sync(
            lambda: ctx.store.log_question(cid, question, surface, user=who.key_id,
                                           error=f"{type(exc).__name__}: {exc}"))
    except Exception as store_exc:  # noqa: BLE001 - the caller gets the original error, not the store's
        log.error("failed question not stored: %s", store_exc)
