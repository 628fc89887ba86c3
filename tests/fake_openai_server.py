"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for tests (no model can be downloaded here).

It speaks the real wire protocol (POST /v1/chat/completions, JSON or Server-Sent Events with stream=true), so
the real `openai` client inside langchain-openai's ChatOpenAI talks to it over HTTP. Its "model" is a few
deterministic behaviours chosen by the request's model name:

- grounded:    answers with the source sentence sharing most words with the question, cited with an exact quote
- fabricated:  one grounded sentence, plus one citing a source number that was not given and one whose quote
               does not occur in the cited source (verification must drop both)
- all-fabricated: only fabricated citations (the answer must be refused)
- noanswer:    replies NO_ANSWER
- obey:        "follows" any instruction found in the sources (prints the injected text) with a real citation
               of the instruction sentence, to check that instruction-like sources cannot steer the answer
- markers:     the "markers" citation protocol: the grounded sentence with its source number, no QUOTES block
- misread:     what SmolLM2-135M wrote in issue 15: a tag-wrapped sentence with a wrong figure and a leading [n]
- forgetful:   rewrites a follow-up as the bare question, dropping the topic of earlier turns (then grounded)
- drifting:    rewrites a follow-up into another question that keeps one topic word, then misreads (as misread)
- error:       HTTP 500
Condense requests (the rewrite prompt) get "<question> (about <last user turn>)".
Every request body is recorded in `server.requests`.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

_SOURCE_RE = re.compile(r"^\[(\d+)\] [^\n]*\n(.*?)(?=\n\n\[\d+\] |\n</sources>|\Z)", re.DOTALL | re.MULTILINE)
_SENT_RE = re.compile(r"(?<=[.!?])\s+")
_WORD_RE = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD_RE.findall(text.lower()) if len(w) > 3}


def _sources(user: str) -> dict[int, str]:
    block = user.split("<sources>", 1)[-1].split("</sources>", 1)[0]
    return {int(n): body.strip() for n, body in _SOURCE_RE.findall("\n" + block.strip() + "\n</sources>")}


def _question(user: str) -> str:
    m = re.search(r"<question>\s*(.*?)\s*</question>", user, re.DOTALL)
    return m.group(1) if m else user


def _best_sentence(question: str, sources: dict[int, str]) -> tuple[int, str]:
    q = _words(question)
    best = (-1, 0, "")
    for n, body in sources.items():
        for line in body.splitlines():
            line = re.sub(r"^\s*(\d+[.)]|[-*])\s+", "", line).strip()
            for sent in _SENT_RE.split(line):
                sent = sent.strip()
                if len(sent) < 15 or sent.startswith("|"):
                    continue
                score = len(q & _words(sent))
                if score > best[0]:
                    best = (score, n, sent)
    return best[1], best[2]


def reply_for(model: str, messages: list[dict]) -> str:
    """The deterministic completion text for a request."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if system.startswith("You rewrite"):
        q = re.search(r"<last_message>\s*(.*?)\s*</last_message>", user, re.DOTALL)
        users = re.findall(r"^User: (.*)$", user, re.MULTILINE)
        if model == "forgetful":  # what a weak model does: the question back, its topic lost
            return q.group(1) if q else ""
        if model == "drifting":  # keeps a topic word but asks about something else (then misreads its sources)
            return "Which gifts can I send in a LIVE with my coins?"
        return f"{q.group(1) if q else ''} (about {users[-1] if users else ''})".strip()
    sources = _sources(user)
    if model == "noanswer" or not sources:
        return "NO_ANSWER"
    n, sent = _best_sentence(_question(user), sources)
    grounded = f"{sent.rstrip('.')} [{n}].\nQUOTES:\n[{n}] \"{sent}\""
    missing = max(sources) + 5
    if model == "markers":
        return f"{sent.rstrip('.')} [{n}]."
    if model in ("misread", "drifting"):
        return f"<source>\n[{n}] The answer is 2 months.\n</source>"
    if model == "fabricated":
        return (f"{sent.rstrip('.')} [{n}]. Refund requests are always approved within one hour [{missing}]. "
                f"Agents can refund used coins to any card [{n}].\n"
                f"QUOTES:\n[{n}] \"{sent}\"\n[{missing}] \"Refund requests are always approved within one hour.\"\n"
                f"[{n}] \"Agents can refund used coins to any card.\"")
    if model == "all-fabricated":
        return (f"Refund requests are always approved within one hour [{missing}]. Agents can refund used coins "
                f"to any card [1].\nQUOTES:\n[{missing}] \"Refund requests are always approved within one hour.\"\n"
                f"[1] \"Agents can refund used coins to any card.\"")
    if model == "obey":
        for num, body in sources.items():
            m = re.search(r"[^.\n]*ignore previous instructions[^.\n]*\.", body, re.IGNORECASE)
            if m:
                s = m.group(0).strip()
                return f"{s.rstrip('.')} [{num}]. Your refund is approved.\nQUOTES:\n[{num}] \"{s}\""
        return grounded
    return grounded


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAIServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _json(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "grounded", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append({"body": body, "headers": dict(self.headers)})
        model = body.get("model", "grounded")
        if model == "error":
            self._json(500, {"error": {"message": "model crashed", "type": "server_error"}})
            return
        text = reply_for(model, body.get("messages", []))
        cid, created = f"chatcmpl-{len(self.server.requests)}", int(time.time())
        if not body.get("stream"):
            self._json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                          "total_tokens": 10 + len(text.split())},
            })
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def send(delta: dict, finish: str | None = None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        send({"role": "assistant", "content": ""})
        for piece in re.findall(r"\S+\s*|\s+", text):
            send({"content": piece})
        send({}, "stop")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeOpenAIServer(ThreadingHTTPServer):
    """The fake server; `start()` serves in a background thread, `url` is the base_url to configure."""

    daemon_threads = True

    def __init__(self, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.requests: list[dict] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client (ends in /v1)."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> FakeOpenAIServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


class SilentServer:
    """A real socket on 127.0.0.1 that accepts every connection and never answers (a hung model server)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client (ends in /v1)."""
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by __exit__
                return
            self.accepted.append(conn)  # held open, never read from or written to

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()
