"""The chat-model composer: an OpenAI-compatible model asked for [n] markers (and, in the "quotes" protocol, exact
quotes), its client with bounded connect/read timeouts, and the rule for when a chat draft is replaced by the
extractive answer."""

from __future__ import annotations

import logging
import re
import threading
import time

from bot.answer.compose import (
    Composer,
    ComposeRequest,
    Draft,
    DraftCitation,
    DraftSentence,
    Source,
    TokenSink,
)
from bot.answer.prompts import NO_ANSWER, QUOTES_HEADER, answer_messages, format_history, format_source
from bot.answer.verify import Verified
from bot.core.config import Settings
from bot.core.errors import ModelEndpointError
from bot.core.text import analyze

log = logging.getLogger(__name__)


_MARKER_RE = re.compile(r"\[(\d{1,3})\]")
_QUOTE_LINE_RE = re.compile(r"^\s*[-*]?\s*\[(\d{1,3})\]\s*[:\-–—]?\s*[\"“”„'‘](.+)[\"“”'’]\s*$")
_QUOTES_SPLIT_RE = re.compile(r"^\s*\**\s*quotes?\s*:?\s*\**\s*$", re.IGNORECASE | re.MULTILINE)
_SENT_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])|(?<=\])\s+(?=[A-Z0-9\"“(])")
_LIST_LINE_RE = re.compile(r"^\s*(\d+[.)]|[-*•])\s+")
# small models wrap answers in tags they saw in the prompt ("<source>", "</answer>"): lines holding only a tag
_TAG_LINE_RE = re.compile(r"^\s*</?[A-Za-z_]+>\s*$")


# why: one pass over a model's free text with many tolerated spellings of the citation syntax
def parse_chat_output(raw: str) -> tuple[list[DraftSentence], bool]:
    """Split a model reply into sentences with their [n] markers and quotes; (sentences, no_answer)."""
    text = raw.strip()
    if not text or text.upper().startswith(NO_ANSWER):
        return [], True
    parts = _QUOTES_SPLIT_RE.split(text, maxsplit=1)
    body = parts[0]
    quotes: dict[int, list[str]] = {}
    if len(parts) > 1:
        for line in parts[1].splitlines():
            m = _QUOTE_LINE_RE.match(line)
            if m:
                quotes.setdefault(int(m.group(1)), []).append(m.group(2).strip())
    sentences: list[DraftSentence] = []
    for line in body.splitlines():
        if not line.strip() or _TAG_LINE_RE.match(line):
            continue
        lm = _LIST_LINE_RE.match(line)
        pieces = [line[lm.end():]] if lm else _SENT_END_RE.split(line.strip())
        for piece in pieces:
            numbers = [int(n) for n in _MARKER_RE.findall(piece)]
            clean = re.sub(r"\s*\[\d{1,3}\]", "", piece).strip()
            if not clean:
                continue
            cites = []
            for n in dict.fromkeys(numbers):
                cites.append(DraftCitation(n, _best_quote(clean, quotes.get(n, []))))
            kind = "sentence" if not lm else ("step" if lm.group(1)[0].isdigit() else "item")
            sentences.append(DraftSentence(clean, cites, kind, lm.group(1) if lm and kind == "step" else ""))
    return sentences, False


def _best_quote(sentence: str, options: list[str]) -> str:
    """The quote for a marker that shares the most words with the sentence ('' when none was given)."""
    if not options:
        return ""
    terms = set(analyze(sentence))
    return max(options, key=lambda q: len(terms & set(analyze(q))))


class ChatComposer(Composer):
    """Answer with an OpenAI-compatible chat model, asking for [n] markers and exact quotes."""

    name = "chat"

    def __init__(self, settings: Settings, llm=None):
        self.settings = settings
        self._llm = llm
        self._probe_lock = threading.Lock()
        self._probed: tuple[float, str, str] | None = None  # (monotonic time, state, detail)

    def endpoint_state(self, max_age_s: float = 15.0) -> tuple[str, str]:
        """("ok" | "unreachable", detail) of the chat endpoint: GET <base_url>/models within the connect timeout
        (and at most 5 s of reading); remembered for max_age_s so frequent health checks do not load the model."""
        with self._probe_lock:
            if self._probed is None or time.monotonic() - self._probed[0] > max_age_s:
                self._probed = (time.monotonic(), *probe_endpoint(self.settings))
            return self._probed[1], self._probed[2]

    @property
    def llm(self):
        """The ChatOpenAI client, built on first use from Settings."""
        if self._llm is None:
            self._llm = build_chat_model(self.settings)
        return self._llm

    def messages(self, request: ComposeRequest) -> tuple[list[tuple[str, str]], list[Source]]:
        """Prompt messages within the model's context window, and the sources that fit into it."""
        from bot.core.tokens import encoding_for_model

        enc = encoding_for_model(self.settings.chat_model)
        count = lambda s: len(enc.encode_ordinary(s))
        base = answer_messages(request.question, [], [], request.audience)
        budget = self.settings.chat_context_window - self.settings.chat_max_tokens - sum(count(c) for _, c in base)
        budget -= 64  # message framing overhead of the chat format
        # history: newest turns first, at most a quarter of the budget
        history: list[dict[str, str]] = []
        used = 0
        for turn in reversed(request.history):
            n = count(turn.get("text", "")) + 4
            if used + n > budget // 4:
                break
            history.insert(0, turn)
            used += n
        budget -= count(format_history(history))
        blocks: list[str] = []
        given: list[Source] = []
        for src in request.all_sources:
            c = src.chunk
            block = format_source(src.number, c.metadata.get("title", c.doc_id), c.section, c.text)
            n = count(block) + 2
            if n > budget:
                if budget > 64:  # the best source must not be dropped whole: cut it to what fits
                    ids = enc.encode_ordinary(c.text)[: budget - 48]
                    cut = enc.decode(ids)
                    blocks.append(format_source(src.number, c.metadata.get("title", c.doc_id), c.section, cut))
                    given.append(src)
                break
            blocks.append(block)
            given.append(src)
            budget -= n
        protocol = citation_protocol(self.settings)
        return answer_messages(request.question, blocks, history, request.audience, protocol), given

    def _compose(self, request: ComposeRequest) -> Draft:
        msgs, given = self.messages(request)
        try:
            raw = message_text(self.llm.invoke(msgs))
        except Exception as exc:
            raise ModelEndpointError(f"Chat model {self.settings.chat_model!r} failed: {exc}") from exc
        sentences, no_answer = parse_chat_output(raw)
        return Draft(sentences, given, self.name, no_answer=no_answer, raw=raw)

    def stream(self, request: ComposeRequest, on_token: TokenSink) -> Draft:
        """Stream the answer part of the reply token by token; the QUOTES block is held back."""
        if not request.sources:
            return Draft([], [], self.name, no_answer=True)
        msgs, given = self.messages(request)
        raw = ""
        shown = 0
        try:
            for chunk in self.llm.stream(msgs):
                raw += message_text(chunk)
                # hold back the tail that might be the start of the QUOTES header or NO_ANSWER
                visible = _visible_part(raw)
                if len(visible) > shown:
                    on_token(visible[shown:])
                    shown = len(visible)
        except Exception as exc:
            raise ModelEndpointError(f"Chat model {self.settings.chat_model!r} failed: {exc}") from exc
        sentences, no_answer = parse_chat_output(raw)
        draft = Draft(sentences, given, self.name, no_answer=no_answer, raw=raw)
        draft.sentences = [s for s in draft.sentences if s.text.strip()]
        if not draft.sentences:
            draft.no_answer = True
        return draft


def _visible_part(raw: str) -> str:
    """The part of a streaming reply safe to show: before QUOTES, never a partial NO_ANSWER, minus a held tail."""
    if NO_ANSWER.startswith(raw.strip()[: len(NO_ANSWER)]) and len(raw.strip()) <= len(NO_ANSWER) + 2:
        return ""
    m = _QUOTES_SPLIT_RE.search(raw)
    if m:
        return raw[: m.start()]
    return raw[: max(0, len(raw) - len(QUOTES_HEADER) - 4)]


def message_text(message) -> str:
    """Text of a LangChain message or chunk (content may be a string or a list of parts)."""
    content = getattr(message, "content", message)
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


def probe_endpoint(settings: Settings) -> tuple[str, str]:
    """("ok" | "unreachable", detail): whether the OpenAI-compatible endpoint lists its models in time."""
    import httpx

    base = (settings.openai_base_url or "https://api.openai.com/v1").rstrip("/")
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
    timeout = httpx.Timeout(min(settings.chat_read_timeout_s, 5.0), connect=settings.chat_connect_timeout_s)
    try:
        resp = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
    except httpx.HTTPError as exc:
        return "unreachable", f"{base}: {type(exc).__name__} {exc}".strip()[:300]
    if resp.status_code >= 400:
        return "unreachable", f"{base}/models answered HTTP {resp.status_code}"
    return "ok", base


def citation_protocol(settings: Settings) -> str:
    """The citation protocol in use: the setting, with "auto" meaning quotes for OpenAI, markers for local servers."""
    if settings.chat_citation_protocol != "auto":
        return settings.chat_citation_protocol
    return "markers" if settings.openai_base_url else "quotes"


def fallback_reason(draft: Draft, verified: Verified, min_sentences: int) -> str:
    """Why a chat draft that the assessment let through must give way to the extractive answer ('' = keep it).

    The assessment alone decides whether a question is answered; a model that says NO_ANSWER, or whose sentences
    do not verify, changes who composes the answer, never whether there is one."""
    if draft.composer != "chat":
        return ""
    if draft.no_answer:
        return "the chat model replied NO_ANSWER although the sources were assessed as answering the question"
    if verified.blocked:
        return "the chat answer cited a source the requester may not see"
    kept = len(verified.sentences)
    if kept >= max(1, min_sentences):
        return ""
    first = f"; first problem: {verified.problems[0]}" if verified.problems else ""
    return (f"{kept} of {len(draft.sentences)} chat sentence(s) verified, {max(1, min_sentences)} needed"
            f"{first}")[:500]


def build_chat_model(settings: Settings):
    """ChatOpenAI for OpenAI or any OpenAI-compatible server, configured only from Settings."""
    import httpx
    from langchain_openai import ChatOpenAI

    if settings.openai_api_key is None and settings.openai_base_url is None:
        raise ModelEndpointError(
            "composer=chat needs POLICYDESK_OPENAI_API_KEY, or POLICYDESK_OPENAI_BASE_URL for a local "
            "OpenAI-compatible server (Ollama, vLLM, llama.cpp)."
        )
    kwargs: dict = {
        "model": settings.chat_model,
        "api_key": settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed",
        "base_url": settings.openai_base_url,
        "temperature": settings.chat_temperature,
        # httpx's read timeout is the longest silence between bytes; retries would multiply the wait a requester
        # sees before the extractive fallback (a silent endpoint cost 131 s with the defaults of a retry)
        "timeout": httpx.Timeout(settings.chat_read_timeout_s, connect=settings.chat_connect_timeout_s),
        "max_retries": 0,
    }
    if settings.send_max_tokens_in_extra_body:
        # llama.cpp / vLLM ignore max_completion_tokens, which is what langchain-openai sends for max_tokens
        kwargs["extra_body"] = {"max_tokens": settings.chat_max_tokens}
    else:
        kwargs["max_tokens"] = settings.chat_max_tokens
    return ChatOpenAI(**kwargs)
