"""The HTTP API and the help-center widget: app factory, access control, limits and the public leak check.

Anonymous callers are always answered as audience=public, whatever the body asks for; audience=internal
needs a key from `Settings.api_keys`. Retrieval already filters by audience, and every public answer is
checked once more here before it leaves the process (`PublicLeakGuard`): citations, related articles and
retrieved documents must all be public, and the text must not contain identifiers or passages that only
internal documents hold.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.core.config import Settings
from bot.core.errors import (
    IndexUnavailableError,
    InputRejectedError,
    ModelEndpointError,
    PolicyDeskError,
    StoreError,
)
from bot.core.events import AnswerEvent, FinalEvent, TextEvent
from bot.core.models import REGIONS, Answer, Audience, Filters

log = logging.getLogger(__name__)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("policydesk")
    except Exception:  # running from a source tree that is not installed
        return "0+unknown"


_pkg_version = _package_version()
STATIC_DIR = Path(__file__).resolve().parent / "static"
SURFACE_HEADER = "X-PolicyDesk-Surface"  # the widget sends "widget" so analytics can tell it from API callers
MAX_TRANSCRIPT_TURNS = 200
MAX_TURN_CHARS = 8000
BLOCKED_TEXT = ("I can't help with that here. You can ask about something else, or talk to a person from our "
                "support team.")


# ---- errors ------------------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error answered as JSON with a stable code and a message the caller can act on."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON shape of every error: {"error": {"code", "message", ...}}."""
    return {"error": {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}}


# ---- request and response models ---------------------------------------------------------------------------
class Turn(BaseModel):
    """One earlier turn of the conversation; `content` is accepted as an alias of `text`."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "agent", "assistant"]
    text: str | None = Field(None, max_length=MAX_TURN_CHARS)
    content: str | None = Field(None, max_length=MAX_TURN_CHARS, description="Alias of text.")

    @model_validator(mode="after")
    def _one_text(self) -> Turn:
        if self.text is None and self.content is None:
            raise ValueError("each history turn needs a 'text' (or 'content') field")
        return self

    def as_dict(self) -> dict[str, str]:
        """The history format every stage uses."""
        return {"role": self.role, "text": self.text if self.text is not None else (self.content or "")}


class AskRequest(BaseModel):
    """A question, the conversation so far, and optional narrowing filters."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"question": "How do I turn on two-factor authentication?", "history": []}]})

    question: str = Field(..., description="The question, in the user's words.")
    history: list[Turn] = Field(default_factory=list, description="Earlier turns, oldest first.")
    audience: Literal["public", "internal"] | None = Field(
        None, description="internal needs an API key; anonymous callers are always answered as public.")
    regions: list[str] = Field(default_factory=list, max_length=len(REGIONS),
                               description=f"Narrow to these regions ({', '.join(REGIONS)}).")
    products: list[str] = Field(default_factory=list, max_length=20, description="Narrow to these products.")
    as_of: date | None = Field(None, description="Answer with the policy versions in force on this date.")
    conversation_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                        description="Keeps the turns of one conversation together.")

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, v: list[str]) -> list[str]:
        by_lower = {r.lower(): r for r in REGIONS}
        out = []
        for r in v:
            if r.lower() not in by_lower:
                raise ValueError(f"unknown region {r!r}; use one of {', '.join(REGIONS)}")
            out.append(by_lower[r.lower()])
        return out

    @field_validator("products")
    @classmethod
    def _product_tags(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", p):
                raise ValueError(f"product tags are 1-40 letters, digits, '-' or '_', not {p[:50]!r}")
        return [p.lower() for p in v]


class CitationOut(BaseModel):
    """A numbered source: the document, the section, the exact quote and a link."""

    number: int
    doc_id: str
    title: str
    section: str = ""
    quote: str
    url: str = ""
    audience: Literal["public", "internal"]
    version: str = ""
    effective_date: str = ""
    chunk_id: str = ""
    regions: list[str] | None = None
    last_reviewed: str | None = None
    review_due: str | None = None
    superseded_by: str | None = None


class RelatedOut(BaseModel):
    """An article suggested when no grounded answer was possible."""

    doc_id: str
    title: str
    url: str = ""


class EscalationOut(BaseModel):
    """Where an agent should send the case (internal callers only)."""

    team: str = ""
    queue: str = ""
    priority: str = ""
    source_doc_id: str = ""
    reason: str = ""


class AskResponse(BaseModel):
    """An answer with its verified citations, or an honest refusal with suggested articles."""

    answer: str
    refused: bool
    refusal_reason: str = ""
    confidence: float = 0.0
    citations: list[CitationOut] = Field(default_factory=list)
    related: list[RelatedOut] = Field(default_factory=list)
    handoff_offered: bool = False
    escalation: EscalationOut | None = None
    audience: Literal["public", "internal"]
    conversation_id: str
    message_id: int | None = Field(None, description="Pass it to /v1/feedback to rate this answer.")
    composer: str = ""
    standalone_question: str = ""
    timings: dict[str, float] = Field(default_factory=dict)


class FeedbackRequest(BaseModel):
    """A thumbs up (+1) or down (-1) on one answer."""

    conversation_id: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")
    message_id: int = Field(..., ge=1, le=2**62)
    rating: Literal[1, -1]
    reason: str | None = Field(None, max_length=2000)


class FeedbackResponse(BaseModel):
    """The stored feedback id."""

    feedback_id: int
    status: Literal["stored"] = "stored"


class HandoffRequest(BaseModel):
    """Hand the conversation to a person: the transcript, and how to reach the user (optional)."""

    conversation_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    transcript: list[Turn] = Field(default_factory=list, max_length=MAX_TRANSCRIPT_TURNS)
    contact: str | None = Field(None, max_length=320, description="E-mail or phone so support can reply.")
    reason: str | None = Field(None, max_length=2000)


class HandoffResponse(BaseModel):
    """The queued handoff and whether the webhook (if configured) accepted it."""

    handoff_id: int
    conversation_id: str
    status: Literal["open"] = "open"
    webhook: Literal["not_configured", "delivered", "failed"]


class HealthResponse(BaseModel):
    """Liveness and the index being served."""

    status: Literal["ok", "unavailable"]
    version: str
    documents: int = 0
    chunks: int = 0
    generation: str | None = None
    composer: str = ""
    detail: str | None = None


class ErrorDetail(BaseModel):
    """What went wrong, as a stable code and a readable message."""

    code: str
    message: str
    error_id: str | None = None
    retry_after: int | None = None
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "The API key is not valid."},
    413: {"model": ErrorResponse, "description": "The request body is larger than max_request_bytes."},
    422: {"model": ErrorResponse, "description": "The request or question was rejected; see the message."},
    429: {"model": ErrorResponse, "description": "Too many requests; retry after the Retry-After seconds."},
    500: {"model": ErrorResponse, "description": "Unexpected error; quote the error_id to support."},
    502: {"model": ErrorResponse, "description": "The configured chat model endpoint failed."},
    503: {"model": ErrorResponse, "description": "The index or the store is not available; retry later."},
}


def _sse_event(names: list[str], data_schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"type": "string", "enum": names},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data_schema}}}


# One server-sent event (OpenAPI 3.1 has `schema` describe each event of a text/event-stream).
SSE_EVENT_SCHEMA: dict[str, Any] = {"oneOf": [
    _sse_event(["token", "sentence"], {"type": "object", "required": ["text"],
                                       "properties": {"text": {"type": "string"}}}),
    _sse_event(["final"], {"$ref": "#/components/schemas/AskResponse"}),
    _sse_event(["error"], {"$ref": "#/components/schemas/ErrorDetail"}),
]}


# ---- access control ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """Who is asking: anonymous (public only) or holding a valid API key (may ask as internal)."""

    client_id: str  # rate-limit identity: the key's fingerprint, else the client IP
    key_id: str | None = None  # short fingerprint of the API key, safe to log and store

    @property
    def authenticated(self) -> bool:
        """True when a configured API key was presented."""
        return self.key_id is not None


def key_fingerprint(key: str) -> str:
    """A short, non-reversible id for an API key (for logs, the store and rate limiting)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


class TokenBucketLimiter:
    """Per-client token buckets: `per_minute` requests per minute with bursts up to the same number."""

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.per_minute = per_minute
        self.capacity = float(max(1, per_minute))
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, stamp)
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> tuple[bool, float, int]:
        """Spend one token; returns (allowed, seconds until the next token, tokens left)."""
        if self.per_minute <= 0:
            return True, 0.0, 0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, stamp = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            # Bounded memory: forget the least recently seen clients (they come back with a full bucket).
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        wait = 0.0 if allowed else (1.0 - tokens) / self.rate
        return allowed, wait, int(tokens)


# ---- the public leak check ---------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+")
_BACKTICK = re.compile(r"`([^`\n]{2,80})`")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"https?://[^\s)>\]\"']+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][-_@./][A-Za-z0-9]|[A-Za-z0-9][-_]$")
SHINGLE = 8  # words; long enough that a shared 8-word run means copied text, not shared vocabulary


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _shingles(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


@dataclass
class _LeakFacts:
    generation: str
    public_docs: frozenset[str]
    markers: tuple[str, ...]  # lower-cased identifiers found only in internal documents
    internal_shingles: frozenset[tuple[str, ...]]


@dataclass
class LeakVerdict:
    """Why a public answer may not be shown (empty = fine)."""

    reasons: list[str] = field(default_factory=list)

    @property
    def leaked(self) -> bool:
        """True when anything internal was found."""
        return bool(self.reasons)


class PublicLeakGuard:
    """Final check of public answers against what only internal documents contain (per index generation)."""

    def __init__(self, index: Any):
        self.index = index
        self._facts: _LeakFacts | None = None
        self._lock = threading.Lock()

    def facts(self) -> _LeakFacts:
        """Markers and shingles of the generation being served (computed once per generation)."""
        gen = self.index.generation()
        name = gen.name if gen is not None else ""
        facts = self._facts
        if facts is not None and facts.generation == name:
            return facts
        with self._lock:
            if self._facts is None or self._facts.generation != name:
                self._facts = self._build(gen, name)
            return self._facts

    @staticmethod
    def _build(gen: Any, name: str) -> _LeakFacts:
        if gen is None:
            return _LeakFacts(name, frozenset(), (), frozenset())
        public_docs = set()
        for doc_id, d in gen.documents.items():
            if (d.get("meta") or {}).get("audience") == "public":
                public_docs.add(doc_id)
        public_text_parts, internal_chunks = [], []
        for c in gen.chunks:
            if c.metadata.get("audience") == "public" and c.doc_id in public_docs:
                meta = c.metadata
                public_text_parts.append(f"{meta.get('title', '')}\n{c.text}\n{meta.get('url', '')}")
            else:
                internal_chunks.append(c)
        public_text = "\n".join(public_text_parts).lower()
        public_shingles = _shingles(_words(public_text))
        candidates: set[str] = set()
        internal_shingles: set[tuple[str, ...]] = set()
        for c in internal_chunks:
            # Identifiers: queue and rotation names in backticks, e-mail addresses, wiki links, document ids.
            candidates.update(m.strip() for m in _BACKTICK.findall(c.text))
            candidates.update(_EMAIL.findall(c.text))
            candidates.update(_URL.findall(c.text))
            if c.metadata.get("url"):
                candidates.add(str(c.metadata["url"]))
            candidates.add(c.doc_id)
            internal_shingles |= _shingles(_words(c.text)) - public_shingles
        # Only identifier-shaped strings (fraud-review, lert@..., on_hold, URLs): a plain word that happens
        # to be in backticks ("processed") is vocabulary, and blocking it would refuse honest answers.
        markers = sorted({m.lower() for m in candidates
                          if len(m) >= 4 and _IDENTIFIER.search(m) and m.lower() not in public_text})
        return _LeakFacts(name, frozenset(public_docs), tuple(markers),
                          frozenset(internal_shingles))

    def check_text(self, text: str) -> list[str]:
        """Internal identifiers or copied internal passages in `text`.

        Text the asker typed gets no exemption: echoing "fraud-review" back would confirm an internal name,
        and a blocked answer is only a refusal.
        """
        facts = self.facts()
        low = text.lower()
        reasons = [f"internal identifier {m!r}" for m in facts.markers
                   if m in low and re.search(r"(?<![a-z0-9])" + re.escape(m), low)]
        copied = [s for s in _shingles(_words(text)) if s in facts.internal_shingles]
        if copied:
            example = " ".join(copied[0])
            reasons.append(f"{len(copied)} passage(s) found only in internal documents, e.g. {example!r}")
        return reasons

    def check(self, answer: Answer) -> LeakVerdict:
        """Every cited, related and retrieved document must be public; the text must hold nothing internal."""
        facts = self.facts()
        reasons: list[str] = []
        for c in answer.citations:
            aud = c.audience.value if isinstance(c.audience, Audience) else str(c.audience)
            if aud != "public" or c.doc_id not in facts.public_docs:
                reasons.append(f"citation of non-public document {c.doc_id!r}")
            else:
                reasons += [f"citation quote: {r}" for r in self.check_text(c.quote)]
        for r in answer.related:
            if r.get("doc_id") not in facts.public_docs:
                reasons.append(f"related non-public document {r.get('doc_id')!r}")
        for doc_id in answer.retrieved_doc_ids:
            if doc_id not in facts.public_docs:
                reasons.append(f"retrieved non-public document {doc_id!r}")
        reasons += self.check_text(answer.text)
        return LeakVerdict(reasons)

    def public_related(self, answer: Answer) -> list[dict[str, str]]:
        """The related articles of an answer that are public (used when a blocked answer is replaced)."""
        facts = self.facts()
        return [r for r in answer.related if r.get("doc_id") in facts.public_docs]


def blocked_answer(answer: Answer, related: list[dict[str, str]]) -> Answer:
    """The refusal shown instead of a public answer that failed the leak check."""
    return replace(answer, text=BLOCKED_TEXT, citations=[], refused=True, refusal_reason="blocked",
                   confidence=0.0, escalation=None, handoff_offered=True, related=related,
                   retrieved_doc_ids=[])


# ---- request body limit ------------------------------------------------------------------------------------
class UnexpectedErrorMiddleware:
    """Turns any unhandled exception into a generic JSON 500 with an error id (the traceback goes to the log).

    Starlette's own handler for Exception answers and then re-raises, which drops the keep-alive connection;
    this one sits inside it and finishes the response normally.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("unhandled error on %s (error id %s)", scope.get("path"), error_id)
            if started:  # too late for a status code; the client sees a cut-off response
                return
            message = ("Something went wrong on our side; please try again. Quote this error id if you "
                       "contact support.")
            body = json.dumps(error_body("internal_error", message, error_id=error_id)).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


class BodySizeLimitMiddleware:
    """Rejects bodies over max_bytes with 413: by Content-Length up front, or by counting a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(send, 400, "bad_request", "Content-Length is not a number.")
                    return
                if declared > self.max_bytes:
                    await self._reject(send, 413, "request_too_large", self._message())
                    return
        received = 0
        started = False
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer 413 now and tell the app the client left: raising here would be turned into a
                    # generic 400 by the framework's body parser.
                    rejected = True
                    if not started:
                        await self._reject(send, 413, "request_too_large", self._message())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 has been sent; whatever the app says now goes nowhere
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _message(self) -> str:
        return f"The request body is larger than the {self.max_bytes} bytes this server accepts."

    @staticmethod
    async def _reject(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps(error_body(code, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ---- the app -----------------------------------------------------------------------------------------------
@dataclass
class ApiContext:
    """Everything the routes share, built once per app (no module-level state)."""

    settings: Settings
    service: Any  # bot.answer.service.AnswerService
    index: Any  # bot.ingest.index.KnowledgeIndex
    store: Any  # bot.store.sqlite.Store
    guard: PublicLeakGuard
    limiter: TokenBucketLimiter
    api_keys: tuple[str, ...]
    work_limiter: anyio.CapacityLimiter | None = None  # bounds concurrent CPU-bound answer work


def _redact(text: str) -> str:
    from bot.answer.safety import redact_pii

    return redact_pii(text)


def _validate(question: str, history: list[dict[str, str]],
              settings: Settings) -> tuple[str, list[dict[str, str]]]:
    from bot.answer.safety import validate_question

    return validate_question(question, history, settings)


def create_app(settings: Settings, index: Any = None, service: Any = None, store: Any = None) -> FastAPI:
    """The FastAPI app: one AnswerService, one Store and one rate limiter per app (pass them in to share)."""
    if service is None:
        from bot.answer.service import AnswerService
        from bot.ingest.index import KnowledgeIndex

        index = index if index is not None else KnowledgeIndex(settings)
        service = AnswerService(settings, index)
    index = index if index is not None else service.index
    if store is None:
        from bot.store.sqlite import Store

        store = Store(settings)
    ctx = ApiContext(
        settings=settings, service=service, index=index, store=store, guard=PublicLeakGuard(index),
        limiter=TokenBucketLimiter(settings.rate_limit_per_minute),
        api_keys=tuple(k.get_secret_value() for k in settings.api_keys if k.get_secret_value()),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Answering is CPU-bound (embedding, BM25): more threads only add contention on small machines.
        ctx.work_limiter = anyio.CapacityLimiter(4)
        await anyio.to_thread.run_sync(_warm_up, ctx)
        yield

    app = FastAPI(
        title="PolicyDesk API",
        version=_pkg_version,
        description=("Grounded support-policy answers with verified citations. Anonymous callers are "
                     "answered from public help-center articles only; `audience=internal` needs an API "
                     "key (`Authorization: Bearer KEY` or `X-API-Key: KEY`)."),
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    # Added last = outermost, so 413s and all other errors carry CORS headers a cross-origin widget can read.
    app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                       allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Content-Type", "Authorization", "X-API-Key", SURFACE_HEADER],
                       expose_headers=["Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"],
                       max_age=600)
    _install_error_handlers(app)

    bearer = HTTPBearer(auto_error=False, description="An API key from Settings.api_keys.")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="An API key from Settings.api_keys.")

    def caller(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer),
               x_key: str | None = Depends(header_key)) -> Caller:
        """Identify the caller and spend a rate-limit token; a wrong key is a 401, never a downgrade."""
        ip = request.client.host if request.client else "unknown"
        presented = (cred.credentials if cred else None) or x_key
        key_id = None
        if presented:
            if any(hmac.compare_digest(presented.encode(), k.encode()) for k in ctx.api_keys):
                key_id = key_fingerprint(presented)
            else:
                _rate_limit(ctx, f"ip:{ip}")  # failed keys still cost the address a token (slows guessing)
                raise ApiError(401, "invalid_api_key", "The API key is not valid. Leave it out to ask as a "
                               "public user, or use a key from the server's api_keys setting.",
                               headers={"WWW-Authenticate": "Bearer"})
        who = Caller(client_id=key_id or f"ip:{ip}", key_id=key_id)
        _rate_limit(ctx, who.client_id)
        return who

    @app.post("/v1/ask", response_model=AskResponse, responses=ERROR_RESPONSES, tags=["answers"],
              summary="Answer a question with verified citations")
    async def ask(body: AskRequest, request: Request, who: Caller = Depends(caller)) -> Any:
        """Answer one question; anonymous callers are always answered from public documents only."""
        filters, question, history, cid = _prepare(ctx, body, who)
        surface = _surface(request)
        try:
            answer = await anyio.to_thread.run_sync(ctx.service.ask, question, history, filters,
                                                    limiter=ctx.work_limiter)
        except PolicyDeskError as exc:
            await _log_failure(ctx, cid, question, surface, who, exc)
            raise
        answer = await anyio.to_thread.run_sync(_final_check, ctx, answer, filters)
        message_id = await _log_answer(ctx, cid, question, answer, surface, who)
        return _response(answer, filters.audience, cid, message_id)

    @app.post("/v1/ask/stream", responses={**ERROR_RESPONSES, 200: {
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        "description": ("Server-sent events: `sentence` (public) or `token`/`sentence` (internal) events "
                        "with {\"text\"}, then one `final` event whose data is the AskResponse JSON; "
                        "`error` events carry {\"code\", \"message\"}.")}}, tags=["answers"],
              summary="Answer a question, streamed as server-sent events")
    async def ask_stream(body: AskRequest, request: Request, who: Caller = Depends(caller)) -> Response:
        """Stream the answer as it is composed; the final event carries the checked answer and citations."""
        filters, question, history, cid = _prepare(ctx, body, who)
        surface = _surface(request)
        events = await anyio.to_thread.run_sync(ctx.service.stream, question, history, filters,
                                                limiter=ctx.work_limiter)
        # Pull the first event before answering 200, so an empty index or a dead endpoint is a proper 503/502.
        first = await anyio.to_thread.run_sync(_next_event, events, limiter=ctx.work_limiter)
        if isinstance(first, PolicyDeskError):
            await _log_failure(ctx, cid, question, surface, who, first)
            raise first
        return EventSourceResponse(
            _sse(ctx, events, first, filters, question, cid, surface, who),
            ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

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
        except StoreError as exc:
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
                if any(c.get("audience") != "public" for c in m.get("citations") or []):
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
        webhook = await _notify_webhook(ctx, hid)
        return HandoffResponse(handoff_id=hid, conversation_id=cid, webhook=webhook)

    @app.get("/v1/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}},
             tags=["service"], summary="Liveness and index status")
    async def health() -> Any:
        """200 with document and chunk counts when an index is being served, else 503."""
        try:
            gen = await anyio.to_thread.run_sync(ctx.index.generation)
        except Exception as exc:  # a broken index is exactly what health must report, not raise
            log.warning("health: index unavailable: %s", exc)
            gen = None
        if gen is None or not gen.chunks:
            body = HealthResponse(status="unavailable", version=_pkg_version, composer=settings.composer,
                                  detail="No index is being served: run `policydesk ingest`.")
            return JSONResponse(body.model_dump(), status_code=503)
        return HealthResponse(status="ok", version=_pkg_version, documents=len(gen.documents),
                              chunks=len(gen.chunks), generation=gen.name, composer=settings.composer)

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
        return HTMLResponse(_demo_page(ctx), headers={"Cache-Control": "no-store"})

    return app


def _warm_up(ctx: ApiContext) -> None:
    """Load the served generation, the embedder and the leak facts before the first request."""
    try:
        if ctx.index.generation() is None:
            log.warning("No index in %s yet: /v1/ask answers 503 until `policydesk ingest` runs.",
                        ctx.settings.data_dir)
            return
        ctx.guard.facts()
        warm = getattr(ctx.service, "warm", None)
        if warm is not None:
            warm()
    except Exception as exc:  # warming is an optimisation; requests report real problems themselves
        log.warning("warm-up skipped: %s", exc)


def _rate_limit(ctx: ApiContext, client: str) -> int:
    """Spend one token of `client`'s bucket or raise a 429 with Retry-After; returns the tokens left."""
    allowed, wait, left = ctx.limiter.take(client)
    if not allowed:
        retry = max(1, math.ceil(wait))
        raise ApiError(429, "rate_limited", f"Too many requests: the limit is {ctx.limiter.per_minute} per "
                       f"minute. Try again in {retry} s.",
                       headers={"Retry-After": str(retry), "X-RateLimit-Limit": str(ctx.limiter.per_minute),
                                "X-RateLimit-Remaining": "0"})
    return left


def _surface(request: Request) -> str:
    """Which surface asked, for the store's analytics."""
    return "widget" if request.headers.get(SURFACE_HEADER, "").lower() == "widget" else "api"


def _prepare(ctx: ApiContext, body: AskRequest,
             who: Caller) -> tuple[Filters, str, list[dict[str, str]], str]:
    """Filters under the caller's rights, the validated question and history, and the conversation id."""
    # Anonymous callers get PUBLIC whatever the body says: the body is not a credential.
    audience = Audience.PUBLIC
    if who.authenticated and body.audience != "public":
        audience = Audience.INTERNAL
    filters = Filters(audience=audience, regions=tuple(body.regions), products=tuple(body.products),
                      as_of=body.as_of)
    question, history = _validate(body.question, [t.as_dict() for t in body.history], ctx.settings)
    log.info("ask audience=%s caller=%s chars=%d history=%d q=%r", audience.value, who.key_id or "anonymous",
             len(question), len(history), _redact(question)[:200])
    return filters, question, history, body.conversation_id or uuid.uuid4().hex


def _final_check(ctx: ApiContext, answer: Answer, filters: Filters) -> Answer:
    """Public answers pass the leak check or are replaced by a refusal; internal answers pass through."""
    if filters.audience is not Audience.PUBLIC:
        return answer
    verdict = ctx.guard.check(answer)
    if not verdict.leaked:
        return replace(answer, escalation=None)  # routing (queues, teams) is for agents only
    log.error("SECURITY: public answer blocked before leaving the API: %s", "; ".join(verdict.reasons[:5]))
    try:
        ctx.store.audit("public_leak_blocked", surface="api", detail="; ".join(verdict.reasons)[:2000])
    except Exception as exc:  # the block itself must not depend on the audit write
        log.error("could not audit the blocked answer: %s", exc)
    return blocked_answer(answer, ctx.guard.public_related(answer))


def _response(answer: Answer, audience: Audience, cid: str, message_id: int | None) -> dict[str, Any]:
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
        "answer": answer.text, "refused": answer.refused, "refusal_reason": answer.refusal_reason,
        "confidence": float(answer.confidence), "citations": cits, "related": related,
        "handoff_offered": answer.handoff_offered, "escalation": escalation, "audience": audience.value,
        "conversation_id": cid, "message_id": message_id, "composer": answer.composer,
        "standalone_question": answer.standalone_question,
        "timings": {k: float(v) for k, v in answer.timings.items() if isinstance(v, (int, float))},
    }


async def _log_answer(ctx: ApiContext, cid: str, question: str, answer: Answer, surface: str,
                      who: Caller) -> int | None:
    """Store the (redacted) turn; a store problem costs the message id, never the answer."""
    try:
        return await anyio.to_thread.run_sync(
            lambda: ctx.store.log_answer(cid, question, answer, surface, user=who.key_id))
    except Exception as exc:
        log.error("answer not stored (conversation %s): %s", cid, exc)
        return None


async def _log_failure(ctx: ApiContext, cid: str, question: str, surface: str, who: Caller,
                       exc: PolicyDeskError) -> None:
    try:
        await anyio.to_thread.run_sync(
            lambda: ctx.store.log_question(cid, question, surface, user=who.key_id,
                                           error=f"{type(exc).__name__}: {exc}"))
    except Exception as store_exc:
        log.error("failed question not stored: %s", store_exc)


def _next_event(events: Iterator[AnswerEvent]) -> AnswerEvent | PolicyDeskError | None:
    """The next event of a stream; a PolicyDesk error is returned (not raised) so the caller can map it."""
    try:
        return next(events)
    except StopIteration:
        return None
    except PolicyDeskError as exc:
        return exc


class _SentenceBuffer:
    """Holds streamed tokens until a sentence ends, so public text is leak-checked before it is sent."""

    _END = re.compile(r"[.!?:;](?:[\"')\]]*)\s+|\n")

    def __init__(self) -> None:
        self.pending = ""

    def feed(self, text: str) -> str:
        """Add text; returns the complete sentences now releasable (may be empty)."""
        self.pending += text
        last = None
        for m in self._END.finditer(self.pending):
            last = m
        if last is None:
            return ""
        out, self.pending = self.pending[:last.end()], self.pending[last.end():]
        return out

    def flush(self) -> str:
        """Whatever is left at the end of the stream."""
        out, self.pending = self.pending, ""
        return out


async def _sse(ctx: ApiContext, events: Iterator[AnswerEvent], first: AnswerEvent | PolicyDeskError | None,
               filters: Filters, question: str, cid: str, surface: str,
               who: Caller) -> AsyncIterator[ServerSentEvent]:
    """Forward the draft (public: sentence by sentence, leak-checked), then the checked final answer."""
    public = filters.audience is Audience.PUBLIC
    buffer = _SentenceBuffer()
    sent = ""
    draft_blocked = False
    final: Answer | None = None
    event: AnswerEvent | PolicyDeskError | None = first
    try:
        while event is not None:
            if isinstance(event, PolicyDeskError):
                await _log_failure(ctx, cid, question, surface, who, event)
                _status, code, message = _map_error(event)
                yield ServerSentEvent(json.dumps(error_body(code, message)["error"]), event="error")
                return
            if isinstance(event, FinalEvent):
                final = event.answer
                break
            if isinstance(event, TextEvent) and not draft_blocked:
                # Sentence events are lines; with the newline added, every piece can simply be appended.
                text = event.text + ("\n" if event.kind == "sentence" else "")
                if not public:
                    yield ServerSentEvent(json.dumps({"text": text}), event=event.kind)
                else:
                    piece = buffer.feed(text)
                    if piece:
                        if ctx.guard.check_text(sent + piece):
                            draft_blocked = True  # stop the draft; the final event carries the refusal
                        else:
                            sent += piece
                            yield ServerSentEvent(json.dumps({"text": piece}), event="sentence")
            event = await anyio.to_thread.run_sync(_next_event, events, limiter=ctx.work_limiter)
        if public and not draft_blocked:
            rest = buffer.flush()
            if rest.strip() and not ctx.guard.check_text(sent + rest):
                yield ServerSentEvent(json.dumps({"text": rest}), event="sentence")
        if final is None:
            raise RuntimeError("the answer stream ended without a final event")
        answer = await anyio.to_thread.run_sync(_final_check, ctx, final, filters)
        message_id = await _log_answer(ctx, cid, question, answer, surface, who)
        body = AskResponse.model_validate(_response(answer, filters.audience, cid, message_id))
        yield ServerSentEvent(body.model_dump_json(), event="final")
    except anyio.get_cancelled_exc_class():
        raise
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("stream failed (error id %s)", error_id)
        data = {"code": "internal_error", "error_id": error_id,
                "message": "Something went wrong on our side; please try again."}
        yield ServerSentEvent(json.dumps(data), event="error")
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


async def _notify_webhook(ctx: ApiContext, handoff_id: int) -> str:
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
    except Exception as exc:
        log.warning("handoff webhook failed for handoff %s: %s", handoff_id, exc)
        return "failed"


# ---- errors as JSON ----------------------------------------------------------------------------------------
def _map_error(exc: PolicyDeskError) -> tuple[int, str, str]:
    """HTTP status, code and message for a PolicyDesk error."""
    if isinstance(exc, InputRejectedError):
        return 422, "input_rejected", str(exc)
    if isinstance(exc, IndexUnavailableError):
        return 503, "index_unavailable", ("The knowledge base is not available right now; please try again "
                                          "shortly.")
    if isinstance(exc, ModelEndpointError):
        return 502, "model_unavailable", "The answering model could not be reached; please try again shortly."
    if isinstance(exc, StoreError):
        return 503, "store_unavailable", "Storage is not available right now; please try again shortly."
    return 500, "internal_error", "Something went wrong on our side."


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A readable summary of pydantic errors, without echoing the (possibly personal) input back."""
    details = []
    for e in errors[:20]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        msg = str(e.get("msg", "invalid value"))
        if e.get("type") == "json_invalid":
            loc, msg = "body", "the body is not valid JSON"
        details.append({"field": loc, "message": msg})
    head = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return f"Invalid request: {head}{more}.", details


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, details=exc.details), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_message(list(exc.errors()))
        return JSONResponse(error_body("invalid_request", message, details=details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: f"No such endpoint: {request.url.path}. See /docs for the API.",
                   405: f"{request.method} is not allowed on {request.url.path}."}.get(exc.status_code,
                                                                                      str(exc.detail))
        return JSONResponse(error_body(code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(PolicyDeskError)
    async def _policydesk(request: Request, exc: PolicyDeskError) -> JSONResponse:
        status, code, message = _map_error(exc)
        error_id = None
        if status >= 500:
            error_id = uuid.uuid4().hex[:12]
            log.error("%s on %s (error id %s): %s", type(exc).__name__, request.url.path, error_id, exc)
        headers = {"Retry-After": "30"} if status in (502, 503) else None
        return JSONResponse(error_body(code, message, error_id=error_id), status_code=status, headers=headers)



# ---- the demo help-center page -----------------------------------------------------------------------------
def _demo_page(ctx: ApiContext) -> str:
    """A small help-center page listing the public articles, with the widget embedded by one script tag."""
    try:
        gen = ctx.index.generation()
        docs = gen.documents if gen is not None else {}
    except Exception:
        docs = {}
    items = []
    for doc_id, d in sorted(docs.items(), key=lambda kv: str((kv[1].get("meta") or {}).get("title", ""))):
        meta = d.get("meta") or {}
        if meta.get("audience") != "public":
            continue
        title = html.escape(str(meta.get("title") or doc_id))
        url = str(meta.get("url") or "")
        href = html.escape(url, quote=True) if url.startswith(("http://", "https://")) else "#"
        items.append(f'<li><a href="{href}">{title}</a></li>')
    articles = "\n        ".join(items) or "<li>No public articles are indexed yet.</li>"
    template = (STATIC_DIR / "demo.html").read_text(encoding="utf-8")
    return template.replace("{{ARTICLES}}", articles)


def app_from_environment() -> FastAPI:
    """App factory for `uvicorn --factory` workers: Settings from POLICYDESK_* and policydesk.toml."""
    return create_app(Settings())
