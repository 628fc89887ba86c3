"""ASGI middleware: a generic JSON 500 for anything unhandled, the request body size limit, and one index
generation per request."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.surfaces.api.errors import error_body

log = logging.getLogger(__name__)


class PinGenerationMiddleware:
    """Each request is answered from one index generation, even when an ingest switches the served one while it
    runs (replicas): retrieval, composing, the leak check and the stored answer all see the same chunks."""

    def __init__(self, app: ASGIApp, index: Any):
        self.app = app
        self.index = index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pinned = getattr(self.index, "pinned", None)
        if scope["type"] != "http" or pinned is None:
            await self.app(scope, receive, send)
            return
        with pinned():  # the generation is picked by the first lookup, in the worker thread that needs it
            await self.app(scope, receive, send)


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
