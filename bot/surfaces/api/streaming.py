"""Server-sent events of /v1/ask/stream: the draft (public: whole sentences, leak-checked), then the final answer."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
from sse_starlette import ServerSentEvent

from bot.core.errors import PolicyDeskError
from bot.core.events import AnswerEvent, FinalEvent, TextEvent
from bot.core.models import Answer, Audience, Filters
from bot.surfaces.api.auth import Caller
from bot.surfaces.api.context import ApiContext, final_check, log_answer, log_failure, response_body
from bot.surfaces.api.errors import error_body, map_error
from bot.surfaces.api.schemas import AskResponse

log = logging.getLogger(__name__)


def next_event(events: Iterator[AnswerEvent]) -> AnswerEvent | PolicyDeskError | None:
    """The next event of a stream; a PolicyDesk error is returned (not raised) so the caller can map it."""
    try:
        return next(events)
    except StopIteration:
        return None
    except PolicyDeskError as exc:
        return exc


class SentenceBuffer:
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


# why: the SSE loop: event kinds, public sentence buffering, errors and the final answer
async def sse_events(ctx: ApiContext, events: Iterator[AnswerEvent], first: AnswerEvent | PolicyDeskError | None,
                     filters: Filters, question: str, cid: str, surface: str,
                     who: Caller) -> AsyncIterator[ServerSentEvent]:
    """Forward the draft (public: sentence by sentence, leak-checked), then the checked final answer."""
    public = filters.audience is Audience.PUBLIC
    buffer = SentenceBuffer()
    sent = ""
    draft_blocked = False
    final: Answer | None = None
    event: AnswerEvent | PolicyDeskError | None = first
    try:
        while event is not None:
            if isinstance(event, PolicyDeskError):
                await log_failure(ctx, cid, question, surface, who, event)
                _status, code, message = map_error(event)
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
            event = await anyio.to_thread.run_sync(next_event, events, limiter=ctx.work_limiter)
        if public and not draft_blocked:
            rest = buffer.flush()
            if rest.strip() and not ctx.guard.check_text(sent + rest):
                yield ServerSentEvent(json.dumps({"text": rest}), event="sentence")
        if final is None:
            raise RuntimeError("the answer stream ended without a final event")
        answer = await anyio.to_thread.run_sync(final_check, ctx, final, filters)
        message_id = await log_answer(ctx, cid, question, answer, surface, who)
        body = AskResponse.model_validate(response_body(answer, filters.audience, cid, message_id))
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
