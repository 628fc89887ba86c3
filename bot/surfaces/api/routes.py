"""The routes of the HTTP API: answers (JSON and SSE), feedback and handoff, health, the widget and its demo page."""

from __future__ import annotations

import html
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from sse_starlette import EventSourceResponse

from bot.core.audience import visible_to
from bot.core.errors import PolicyDeskError, RecordNotFoundError, StoreError
from bot.core.models import Audience
from bot.surfaces.api.auth import Caller
from bot.surfaces.api.context import (
    ApiContext,
    final_check,
    log_answer,
    log_failure,
    prepare,
    response_body,
    surface_of,
)
from bot.surfaces.api.errors import ApiError
from bot.surfaces.api.schemas import (
    ERROR_RESPONSES,
    SSE_EVENT_SCHEMA,
    AskRequest,
    AskResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HandoffRequest,
    HandoffResponse,
    HealthResponse,
)
from bot.surfaces.api.streaming import next_event, sse_events

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


def add_answer_routes(app: FastAPI, ctx: ApiContext, caller: Callable[..., Caller]) -> None:
    """POST /v1/ask (one JSON answer) and /v1/ask/stream (server-sent events)."""

    @app.post("/v1/ask", response_model=AskResponse, responses=ERROR_RESPONSES, tags=["answers"],
              summary="Answer a question with verified citations")
    async def ask(body: AskRequest, request: Request, who: Caller = Depends(caller)) -> Any:
        """Answer one question; anonymous callers are always answered from public documents only."""
        filters, question, history, cid = prepare(ctx, body, who)
        surface = surface_of(request)
        try:
            answer = await anyio.to_thread.run_sync(ctx.service.ask, question, history, filters,
                                                    limiter=ctx.work_limiter)
        except PolicyDeskError as exc:
            await log_failure(ctx, cid, question, surface, who, exc)
            raise
        answer = await anyio.to_thread.run_sync(final_check, ctx, answer, filters)
        message_id = await log_answer(ctx, cid, question, answer, surface, who)
        return response_body(answer, filters.audience, cid, message_id)

    @app.post("/v1/ask/stream", responses={**ERROR_RESPONSES, 200: {
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        "description": ("Server-sent events: `sentence` (public) or `token`/`sentence` (internal) events "
                        "with {\"text\"}, then one `final` event whose data is the AskResponse JSON; "
                        "`error` events carry {\"code\", \"message\"}.")}}, tags=["answers"],
              summary="Answer a question, streamed as server-sent events")
    async def ask_stream(body: AskRequest, request: Request, who: Caller = Depends(caller)) -> Response:
        """Stream the answer as it is composed; the final event carries the checked answer and citations."""
        filters, question, history, cid = prepare(ctx, body, who)
        surface = surface_of(request)
        events = await anyio.to_thread.run_sync(ctx.service.stream, question, history, filters,
                                                limiter=ctx.work_limiter)
        # Pull the first event before answering 200, so an empty index or a dead endpoint is a proper 503/502.
        first = await anyio.to_thread.run_sync(next_event, events, limiter=ctx.work_limiter)
        if isinstance(first, PolicyDeskError):
            await log_failure(ctx, cid, question, surface, who, first)
            raise first
        return EventSourceResponse(
            sse_events(ctx, events, first, filters, question, cid, surface, who),
            ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def add_feedback_routes(app: FastAPI, ctx: ApiContext, caller: Callable[..., Caller]) -> None:
    """POST /v1/feedback (rate an answer) and /v1/handoff (queue the conversation for a person)."""

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorResponse, "description": "No such answer in that conversation."}},
        tags=["feedback"], summary="Rate an answer")
    async def feedback(body: FeedbackRequest, who: Caller = Depends(caller)) -> Any:
        """Store a thumbs up or down (reason redacted) for an answer returned by /v1/ask."""
        try:
            fid = await anyio.to_thread.run_sync(
                lambda: ctx.store.add_feedback(body.conversation_id, body.message_id, body.rating,
                                               body.reason, user=who.key_id))
        except RecordNotFoundError as exc:  # any other store failure is a 503 without paths (errors.py)
            raise ApiError(404, "not_found", f"{exc} Rate an answer with the conversation_id and message_id "
                           "that /v1/ask returned.") from exc
        return FeedbackResponse(feedback_id=fid)

    @app.post("/v1/handoff", response_model=HandoffResponse, responses=ERROR_RESPONSES, tags=["handoff"],
              summary="Hand the conversation to a person")
    async def handoff(body: HandoffRequest, who: Caller = Depends(caller)) -> Any:
        """Queue the conversation for support (transcript redacted) and notify the webhook if one is set."""
        cid = body.conversation_id or uuid.uuid4().hex
        transcript = [t.as_dict() for t in body.transcript]
        if not transcript and body.conversation_id:
            stored = await anyio.to_thread.run_sync(ctx.store.conversation_messages, body.conversation_id)
            for m in stored:
                # An id is not a credential: never copy an agent's internal answers into a public handoff.
                if not all(visible_to(Audience.PUBLIC, c.get("audience")) for c in m.get("citations") or []):
                    continue
                transcript.append({"role": "user", "text": m.get("question") or ""})
                if m.get("answer"):
                    transcript.append({"role": "assistant", "text": m["answer"]})
        if not transcript and not (body.reason or "").strip():
            raise ApiError(422, "empty_handoff", "Send the conversation in 'transcript' (or a 'reason'), so "
                           "the person who picks this up knows what you need.")
        try:
            hid = await anyio.to_thread.run_sync(
                lambda: ctx.store.add_handoff(cid, transcript, body.contact, body.reason))
        except StoreError as exc:
            log.error("handoff not stored: %s", exc)
            raise ApiError(503, "handoff_unavailable", "The handoff could not be saved right now; nothing "
                           "was lost on your side, please try again in a minute.",
                           headers={"Retry-After": "30"})
        log.info("handoff %s queued for conversation %s (%d turns)", hid, cid, len(transcript))
        webhook = await notify_webhook(ctx, hid)
        return HandoffResponse(handoff_id=hid, conversation_id=cid, webhook=webhook)


def add_service_routes(app: FastAPI, ctx: ApiContext, version: str) -> None:
    """GET /v1/health, the widget's script and styles, and the demo help-center page."""

    @app.get("/v1/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}},
             tags=["service"], summary="Liveness and index status")
    async def health() -> Any:
        """200 with document and chunk counts when an index is being served; 503 with the reason when none is,
        or when searches are failing (status degraded)."""
        try:
            gen = await anyio.to_thread.run_sync(ctx.index.generation)
        except Exception as exc:  # noqa: BLE001 - a broken index is exactly what health must report
            log.warning("health: index unavailable: %s", exc)
            gen = None
        if gen is None or not gen.chunks:
            body = HealthResponse(status="unavailable", version=version, composer=ctx.settings.composer,
                                  detail="No index is being served: run `policydesk ingest`.")
            return JSONResponse(body.model_dump(), status_code=503)
        chat_state, detail = None, None
        if ctx.settings.composer == "chat":
            chat_state, where = await anyio.to_thread.run_sync(ctx.service.composer("chat").endpoint_state)
            if chat_state != "ok":
                detail = f"The chat model endpoint is unreachable ({where}); answers fall back to extractive."
        # A failing vector search means no answers at all (503); a down chat endpoint only means extractive ones.
        failure = getattr(ctx.index, "search_failure", None)
        body = HealthResponse(status="ok" if chat_state in (None, "ok") and not failure else "degraded",
                              version=version, documents=len(gen.documents), chunks=len(gen.chunks),
                              generation=gen.name, composer=ctx.settings.composer, chat_endpoint=chat_state,
                              detail=failure or detail)
        return JSONResponse(body.model_dump(), status_code=503) if failure else body

    @app.get("/widget.js", include_in_schema=False)
    async def widget_js() -> Response:
        """The embeddable widget script."""
        return FileResponse(STATIC_DIR / "widget.js", media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=300"})

    @app.get("/widget.css", include_in_schema=False)
    async def widget_css() -> Response:
        """The widget's styles (loaded into its shadow root)."""
        return FileResponse(STATIC_DIR / "widget.css", media_type="text/css",
                            headers={"Cache-Control": "public, max-age=300"})

    @app.get("/", include_in_schema=False)
    @app.get("/demo", include_in_schema=False)
    async def demo(request: Request) -> HTMLResponse:
        """A demo help-center page with the widget embedded by one script tag."""
        return HTMLResponse(demo_page(ctx), headers={"Cache-Control": "no-store"})

    return app


async def notify_webhook(ctx: ApiContext, handoff_id: int) -> str:
    """POST the stored (redacted) handoff to the webhook; failures are logged and the handoff stays queued."""
    url = ctx.settings.handoff_webhook_url
    if not url:
        return "not_configured"
    try:
        h = await anyio.to_thread.run_sync(ctx.store.get_handoff, handoff_id)
        payload = {"event": "handoff.created", "handoff_id": h.id, "conversation_id": h.conversation_id,
                   "status": h.status, "transcript": h.transcript, "contact": h.contact, "reason": h.reason,
                   "created_at": h.created_at}
        async with httpx.AsyncClient(timeout=5.0) as client:
            resp = await client.post(url, json=payload)
        if resp.status_code >= 300:
            log.warning("handoff webhook answered %s for handoff %s", resp.status_code, handoff_id)
            return "failed"
        return "delivered"
    except Exception as exc:  # noqa: BLE001 - the handoff stays queued whatever the webhook does
        log.warning("handoff webhook failed for handoff %s: %s", handoff_id, exc)
        return "failed"


def demo_page(ctx: ApiContext) -> str:
    """A small help-center page listing the public articles, with the widget embedded by one script tag."""
    try:
        gen = ctx.index.generation()
        docs = gen.documents if gen is not None else {}
    except Exception:  # noqa: BLE001 - the demo page lists no articles rather than failing
        docs = {}
    items = []
    for doc_id, d in sorted(docs.items(), key=lambda kv: str((kv[1].get("meta") or {}).get("title", ""))):
        meta = d.get("meta") or {}
        if not visible_to(Audience.PUBLIC, meta.get("audience")):
            continue
        title = html.escape(str(meta.get("title") or doc_id))
        url = str(meta.get("url") or "")
        href = html.escape(url, quote=True) if url.startswith(("http://", "https://")) else "#"
        items.append(f'<li><a href="{href}">{title}</a></li>')
    articles = "\n        ".join(items) or "<li>No public articles are indexed yet.</li>"
    template = (STATIC_DIR / "demo.html").read_text(encoding="utf-8")
    return template.replace("{{ARTICLES}}", articles)
