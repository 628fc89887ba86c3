"""Errors answered as JSON: {"error": {"code", "message", ...}}, with a status a caller can act on."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.core.errors import (
    IndexUnavailableError,
    InputRejectedError,
    ModelEndpointError,
    PolicyDeskError,
    StoreError,
)

log = logging.getLogger(__name__)


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



def map_error(exc: PolicyDeskError) -> tuple[int, str, str]:
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


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
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


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes the JSON error body with a status the caller can act on, never a stack trace."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, details=exc.details), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = validation_message(list(exc.errors()))
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
        status, code, message = map_error(exc)
        error_id = None
        if status >= 500:
            error_id = uuid.uuid4().hex[:12]
            log.error("%s on %s (error id %s): %s", type(exc).__name__, request.url.path, error_id, exc)
        headers = {"Retry-After": "30"} if status in (502, 503) else None
        return JSONResponse(error_body(code, message, error_id=error_id), status_code=status, headers=headers)
