"""Real HTTP for the API tests: uvicorn on 127.0.0.1 in a thread, and a webhook receiver for handoffs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
from pydantic import SecretStr

from bot.core.config import Settings

API_KEY = "test-agent-key-5f1c"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app: Any, timeout: float = 120.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port; yields its base URL and stops it afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited during startup (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start within {timeout} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


class WebhookSink:
    """A real HTTP endpoint on 127.0.0.1 that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                sink.received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/handoff"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class ApiServer:
    """A running API: where it listens and the real parts behind it."""

    base_url: str
    settings: Settings
    store: Any
    service: Any
    index: Any
    webhook: WebhookSink
    api_key: str = API_KEY
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client on this server (no proxies from the environment: loopback only)."""
        return httpx.Client(base_url=self.base_url, timeout=120.0, trust_env=False, **kwargs)


def api_settings(base: Settings, **overrides: Any) -> Settings:
    """Settings for a test server: the base index settings with an agent key and a generous rate limit."""
    values: dict[str, Any] = {"api_keys": [SecretStr(API_KEY)], "rate_limit_per_minute": 100_000,
                              "cors_origins": ["https://help.loopline.example"]}
    values.update(overrides)
    return base.model_copy(update=values)


@contextmanager
def running_api(base: Settings, index: Any, workdir: Path, service: Any = None,
                **overrides: Any) -> Iterator[ApiServer]:
    """The real app (AnswerService over `index`, SQLite store in workdir) on loopback, with a webhook."""
    from bot.answer.service import AnswerService
    from bot.store.sqlite import Store
    from bot.surfaces.api import create_app

    with WebhookSink() as sink:
        settings = api_settings(base, **{"handoff_webhook_url": sink.url, **overrides})
        service = service or AnswerService(settings, index)
        store = Store(Path(workdir) / "api.sqlite3")
        app = create_app(settings, index=index, service=service, store=store)
        with serve_in_thread(app) as url:
            yield ApiServer(url, settings, store, service, index, sink)
