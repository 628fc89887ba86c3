"""The FastAPI app: create_app wires settings, the answer service, the store, limits, middleware and routes.

Anonymous callers are always answered as audience=public, whatever the body asks for; audience=internal
needs a key from `Settings.api_keys`. Retrieval already filters by audience, and every public answer is
checked by the answer service and once more before it leaves the process (bot/core/audience.py): citations, related articles and retrieved
documents must all be public, and the text must not contain identifiers or passages that only internal
documents hold.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from bot.core.audience import LeakGuard
from bot.core.config import Settings
from bot.surfaces.api.auth import StoreLimiter, TokenBucketLimiter, caller_dependency
from bot.surfaces.api.context import SURFACE_HEADER, ApiContext
from bot.surfaces.api.errors import install_error_handlers
from bot.surfaces.api.middleware import (
    BodySizeLimitMiddleware,
    PinGenerationMiddleware,
    UnexpectedErrorMiddleware,
)
from bot.surfaces.api.routes import add_answer_routes, add_feedback_routes, add_service_routes

log = logging.getLogger(__name__)


def package_version() -> str:
    """The installed policydesk version, for /v1/health and the OpenAPI document."""
    try:
        from importlib.metadata import version

        return version("policydesk")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        return "0+unknown"


def create_app(settings: Settings, index: Any = None, service: Any = None, store: Any = None) -> FastAPI:
    """The FastAPI app: one AnswerService, one Store and one rate limiter per app (pass them in to share)."""
    ctx = build_context(settings, index, service, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Answering is CPU-bound (embedding, BM25): more threads only add contention on small machines.
        ctx.work_limiter = anyio.CapacityLimiter(4)
        await anyio.to_thread.run_sync(warm_up, ctx)
        yield

    version = package_version()
    # /docs and /redoc load Swagger UI and ReDoc from files shipped in the fastapi-offline wheel, not a CDN,
    # so the API documentation works on a machine with no internet access.
    app = FastAPIOffline(
        title="PolicyDesk API",
        version=version,
        description=("Grounded support-policy answers with verified citations. Anonymous callers are "
                     "answered from public help-center articles only; `audience=internal` needs an API "
                     "key (`Authorization: Bearer KEY` or `X-API-Key: KEY`)."),
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(PinGenerationMiddleware, index=ctx.index)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    # Added last = outermost, so 413s and all other errors carry CORS headers a cross-origin widget can read.
    app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                       allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Content-Type", "Authorization", "X-API-Key", SURFACE_HEADER],
                       expose_headers=["Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"],
                       max_age=600)
    install_error_handlers(app)
    caller = caller_dependency(ctx.api_keys, ctx.limiter)
    add_answer_routes(app, ctx, caller)
    add_feedback_routes(app, ctx, caller)
    add_service_routes(app, ctx, version)
    return app


def build_context(settings: Settings, index: Any = None, service: Any = None, store: Any = None) -> ApiContext:
    """The shared parts of one app; the service, index and store are built from settings unless passed in."""
    if service is None:
        from bot.answer.service import AnswerService
        from bot.ingest.index import KnowledgeIndex

        index = index if index is not None else KnowledgeIndex(settings)
        service = AnswerService(settings, index)
    index = index if index is not None else service.index
    if store is None:
        from bot.store.sqlite import Store

        store = Store(settings)
    return ApiContext(
        settings=settings, service=service, index=index, store=store,
        guard=getattr(service, "guard", None) or LeakGuard(index),
        limiter=(StoreLimiter(store, settings.rate_limit_per_minute) if settings.rate_limit_shared
                 else TokenBucketLimiter(settings.rate_limit_per_minute)),
        api_keys=tuple(k.get_secret_value() for k in settings.api_keys if k.get_secret_value()),
    )


def warm_up(ctx: ApiContext) -> None:
    """Load the served generation, the embedder and the leak facts before the first request."""
    try:
        if ctx.index.generation() is None:
            log.warning("No index in %s yet: /v1/ask answers 503 until `policydesk ingest` runs.",
                        ctx.settings.data_dir)
            return
        opener = getattr(ctx.index, "open", None)
        if opener is not None:  # the Chroma client, once and under the index's lock, before any request
            opener()
        ctx.guard.facts()
        warm = getattr(ctx.service, "warm", None)
        if warm is not None:
            warm()
    except Exception as exc:  # noqa: BLE001 - warming is an optimisation; requests report real problems
        log.warning("warm-up skipped: %s", exc)


def app_from_environment() -> FastAPI:
    """App factory for `uvicorn --factory` workers: Settings from POLICYDESK_* and policydesk.toml."""
    return create_app(Settings())
