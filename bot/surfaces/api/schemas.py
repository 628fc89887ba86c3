"""Request and response bodies of the HTTP API (pydantic models), and the OpenAPI shape of errors and SSE."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.core.models import REGIONS

MAX_TRANSCRIPT_TURNS = 200
MAX_TURN_CHARS = 8000


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, (list, tuple)):
        return any(_has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    return False


class RequestModel(BaseModel):
    """Base of every request body: text must be valid Unicode. JSON can carry a lone UTF-16 surrogate
    ("\\ud800") that no UTF-8 store, log or model accepts; it is a 422 here, not a 500 later."""

    @model_validator(mode="after")
    def _valid_unicode(self) -> Any:
        for name, value in self:
            if _has_lone_surrogate(value):
                raise ValueError(f"'{name}' contains an unpaired UTF-16 surrogate; send valid Unicode text")
        return self


class HistoryTurn(RequestModel):
    """One earlier turn of the conversation; `content` is accepted as an alias of `text`."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "agent", "assistant"]
    text: str | None = Field(None, max_length=MAX_TURN_CHARS)
    content: str | None = Field(None, max_length=MAX_TURN_CHARS, description="Alias of text.")

    @model_validator(mode="after")
    def _one_text(self) -> HistoryTurn:
        if self.text is None and self.content is None:
            raise ValueError("each history turn needs a 'text' (or 'content') field")
        return self

    def as_dict(self) -> dict[str, str]:
        """The history format every stage uses."""
        return {"role": self.role, "text": self.text if self.text is not None else (self.content or "")}


class AskRequest(RequestModel):
    """A question, the conversation so far, and optional narrowing filters."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"question": "How do I turn on two-factor authentication?", "history": []}]})

    question: str = Field(..., description="The question, in the user's words.")
    history: list[HistoryTurn] = Field(default_factory=list, description="Earlier turns, oldest first.")
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
    outcome: Literal["answered", "caution", "refused"] = Field(
        "answered", description="caution (agents only): closest guidance, the exact detail is not confirmed; "
        "the public gets answered or refused.")
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
    fallback_reason: str = Field("", description="composer extractive-fallback: why the chat model's answer was "
                                 "not used (agents only; empty for public callers).")
    standalone_question: str = ""
    timings: dict[str, float] = Field(default_factory=dict)


class FeedbackRequest(RequestModel):
    """A thumbs up (+1) or down (-1) on one answer."""

    conversation_id: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")
    message_id: int = Field(..., ge=1, le=2**62)
    rating: Literal[1, -1]
    reason: str | None = Field(None, max_length=2000)


class FeedbackResponse(BaseModel):
    """The stored feedback id."""

    feedback_id: int
    status: Literal["stored"] = "stored"


class HandoffRequest(RequestModel):
    """Hand the conversation to a person: the transcript, and how to reach the user (optional)."""

    conversation_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    transcript: list[HistoryTurn] = Field(default_factory=list, max_length=MAX_TRANSCRIPT_TURNS)
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

    status: Literal["ok", "degraded", "unavailable"]
    version: str
    documents: int = 0
    chunks: int = 0
    generation: str | None = None
    composer: str = ""
    chat_endpoint: Literal["ok", "unreachable"] | None = Field(
        None, description="composer chat: whether the model endpoint answers (unreachable = answers fall back to "
        "extractive and status is degraded)."
    )
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
