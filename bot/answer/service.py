"""The answer chain every surface uses: condense -> retrieve -> compose -> verify -> Answer.

Built from langchain-core runnables (one RunnableLambda per stage, piped into a RunnableSequence) over typed
stage objects. `AnswerService` holds the Settings, one KnowledgeIndex and the composers, and is built once per
process; `answer_question` / `stream_answer` are conveniences for one-off calls.

    service = AnswerService(settings)
    answer = service.ask("How long do EU users have to get a coin refund?", [], Filters(Audience.PUBLIC))
    answer.text, answer.citations, answer.refused
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from langchain_core.runnables import RunnableLambda

from bot.answer import assess
from bot.answer.assess import (  # re-exported: surfaces and tests name refusal reasons from here
    HANDOFF_REQUESTED,
    REFUSAL_BLOCKED,
    REFUSAL_LOW_CONFIDENCE,
    REFUSAL_NO_SOURCES,
    REFUSAL_NO_SUPPORT,
    REFUSAL_NOT_A_QUESTION,
)
from bot.answer.chat import ChatComposer, fallback_reason, message_text
from bot.answer.compose import Composer, ComposeRequest, Draft, Source
from bot.answer.condense import ChatCondenser, Condensed, DeterministicCondenser, describe_decision
from bot.answer.escalation import QueueInfo, find_escalation, queue_table
from bot.answer.extractive import ExtractiveComposer
from bot.answer.safety import CRISIS_QUERY, CrisisDetector, asks_for_person, redact_pii, validate_question
from bot.answer.verify import CitationVerifier, Verified
from bot.core.audience import LeakGuard, blocked_answer, visible_to
from bot.core.config import Settings
from bot.core.errors import InputRejectedError, ModelEndpointError
from bot.core.events import AnswerEvent, FinalEvent, TextEvent
from bot.core.models import Answer, Audience, Filters, ScoredChunk
from bot.core.text import TermWeights
from bot.ingest.embeddings import MemoEmbedder
from bot.ingest.index import KnowledgeIndex
from bot.search.retrieval import HybridSearcher

log = logging.getLogger(__name__)

# greetings and thanks carry no question; answering them from the KB would cite something at random
_SMALL_TALK_RE = re.compile(
    r"^\W*(hi|hello|hey|hiya|yo|thanks|thank you|thx|ty|ok|okay|k|bye|goodbye|cheers|cool|great|yes|no|yep|nope|"
    r"good (morning|afternoon|evening|night))( there| so much| a lot| all)?\W*$", re.IGNORECASE)

NOT_A_QUESTION_TEXT = "Ask me a question about a support policy, and I'll answer it from the knowledge base."
REFUSAL_TEXT = {
    "internal": "The knowledge base does not cover this question, so I can't give a sourced answer.",
    "public": "I couldn't find an answer to this in our help center.",
}
REFUSAL_DETAIL = {
    REFUSAL_LOW_CONFIDENCE: "the closest documents do not answer the question closely enough",
    REFUSAL_NO_SUPPORT: "the closest documents do not contain a verifiable answer",
    REFUSAL_NO_SOURCES: "no document is visible under the requester's filters",
    REFUSAL_BLOCKED: "the only sources were not cleared for public answers",
    REFUSAL_NOT_A_QUESTION: "the message is a greeting or thanks, not a question",
    HANDOFF_REQUESTED: "the requester asked for a person",
}
HANDOFF_TEXT = "Of course: you can talk to a person on our support team."
CAUTION_LEAD = "Not confirmed: the knowledge base does not state {missing}. Closest guidance:"


# ---- stage objects -------------------------------------------------------------------------------------


@dataclass
class Retrieved:
    """Retrieve stage output: the numbered sources; `confidence` (the answerability score of
    bot/answer/assess.py) is filled in by the compose stage, which also weighs the extracted evidence."""

    sources: list[Source]
    confidence: float
    query_vector: np.ndarray | None = None
    scored: list[ScoredChunk] = field(default_factory=list)
    companions: list[Source] = field(default_factory=list)  # the top document's steps/deadline chunks, for composing


@dataclass
class Turn:
    """State flowing through the chain; each stage fills its part and records its time."""

    question: str
    history: list[dict[str, str]]
    filters: Filters
    composer: str
    condensed: Condensed | None = None
    retrieved: Retrieved | None = None
    draft: Draft | None = None
    verified: Verified | None = None
    answerability: assess.Features | None = None
    crisis: bool = False  # someone may be at risk: searched with the crisis vocabulary, never refused as unsure
    evidence: Draft | None = None  # the extractive selection: the answer when the chat draft fails
    fallback_reason: str = ""  # why the chat draft gave way to the extractive answer
    timings: dict[str, float] = field(default_factory=dict)
    on_token: Any = None  # callable(str) when streaming


# ---- the service ---------------------------------------------------------------------------------------


class AnswerService:
    """Settings + one KnowledgeIndex + composers; answers questions through the runnable chain."""

    def __init__(self, settings: Settings, index: KnowledgeIndex | None = None, chat_llm=None,
                 history_blend: bool = True):
        self.settings = settings
        self.history_blend = history_blend
        self.index = index if index is not None else KnowledgeIndex(settings)
        # the searcher embeds the query; memoising lets the composer reuse that vector instead of recomputing
        if not isinstance(self.index.embedder, MemoEmbedder):
            self.index.embedder = MemoEmbedder(self.index.embedder)
        self.embedder: MemoEmbedder = self.index.embedder
        self.searcher = HybridSearcher.from_settings(self.index, settings)
        self.guard = LeakGuard(self.index)  # every public answer passes it, whichever surface asked
        self.profile = settings.profile
        self.condenser = DeterministicCondenser(profile=self.profile)
        self.verifier = CitationVerifier()
        self.crisis = CrisisDetector(self.embedder.embed_array)
        self.composers: dict[str, Composer] = {
            "extractive": ExtractiveComposer(self.embedder.embed_array, profile=settings.profile,
                                             max_units=settings.answer_max_sentences,
                                             max_steps=settings.answer_max_steps,
                                             max_words_internal=settings.answer_max_words_internal,
                                             max_words_public=settings.answer_max_words_public,
                                             embed_units=settings.answer_embed_units),
        }
        self._chat_llm = chat_llm
        self._weights: tuple[str, TermWeights] | None = None
        self._queues: tuple[str, dict[str, QueueInfo]] | None = None
        self.chain = (
            RunnableLambda(self._condense, name="condense")
            | RunnableLambda(self._retrieve, name="retrieve")
            | RunnableLambda(self._compose, name="compose")
            | RunnableLambda(self._verify, name="verify")
        )

    # helpers -----------------------------------------------------------------------------------------
    def composer(self, name: str) -> Composer:
        """The composer called `name` (chat is built on first use)."""
        if name not in ("extractive", "chat"):
            raise InputRejectedError(f"composer must be 'extractive' or 'chat', not {name!r}.")
        if name == "chat" and "chat" not in self.composers:
            self.composers["chat"] = ChatComposer(self.settings, llm=self._chat_llm)
        return self.composers[name]

    def weights(self) -> TermWeights:
        """idf of terms in the served generation (recomputed when the generation changes)."""
        gen = self.index.generation()
        if gen is None:
            return TermWeights.uniform()
        if self._weights is None or self._weights[0] != gen.name:
            self._weights = (gen.name, TermWeights(gen.lexical.doc_freq, gen.lexical.size))
        return self._weights[1]

    def queues(self, gen) -> dict[str, QueueInfo]:
        """Queue table of the served generation."""
        if self._queues is None or self._queues[0] != gen.name:
            self._queues = (gen.name, queue_table(gen, self.profile))
        return self._queues[1]

    def warm(self) -> None:
        """Load the embedder, the generation, its BM25 index and term weights so the first question is fast."""
        self.embedder.embed_array(["warm up"])
        gen = self.index.require_generation()
        gen.lexical  # noqa: B018 - builds BM25 now rather than inside the first question (seconds at 100k chunks)
        self.queues(gen)
        self.weights()
        self.profile.places("warm up")  # loads the gazetteer (~0.8 s) now rather than inside the first question
        self.guard.facts()

    def threshold(self, filters: Filters) -> float:
        """The refusal threshold for the requester's audience."""
        internal = self.settings.refusal_threshold_internal
        if filters.audience is Audience.INTERNAL and internal is not None:
            return internal
        return self.settings.refusal_threshold

    def _floor(self, turn: Turn) -> float:
        """Below this score composing is skipped: the refusal floor (agents: the caution threshold); a crisis
        message gets the closest safety content even when the match is weak, so it has no floor."""
        if turn.crisis:
            return 0.0
        answer = self.threshold(turn.filters)
        if turn.filters.audience is Audience.INTERNAL:
            return min(answer, self.settings.caution_threshold)
        return answer

    # stages ------------------------------------------------------------------------------------------
    def _timed(self, turn: Turn, stage: str, started: float) -> None:
        turn.timings[stage] = time.perf_counter() - started

    def _condense(self, turn: Turn) -> Turn:
        t = time.perf_counter()
        condenser = self.condenser
        if turn.composer == "chat" and turn.history:
            chat = self.composer("chat")
            condenser = ChatCondenser(lambda msgs: _invoke_text(chat, msgs), self.condenser)
        k = self.settings.top_k
        c = turn.condensed = condenser.run(turn.question, turn.history, self.weights(),
                                           search=lambda text: self.searcher.search(text, turn.filters, k=k))
        if self.crisis.check(turn.question, turn.history if c.decision == "follow-up" else [],
                             prefetch=[c.retrieval_query]):  # the search's query vector comes from the same call
            turn.crisis = True
            turn.condensed = replace(c, retrieval_query=f"{c.retrieval_query} {CRISIS_QUERY}")
        self._timed(turn, "condense", t)
        return turn

    @staticmethod
    def _context(turn: Turn) -> list[dict[str, str]]:
        """The history a turn is answered with: none for a new question, so it is answered as if asked alone."""
        return turn.history if turn.condensed is None or turn.condensed.decision == "follow-up" else []

    def _retrieve(self, turn: Turn) -> Turn:
        t = time.perf_counter()
        query = turn.condensed.retrieval_query
        # earlier user turns also steer the search (the retriever blends them in), measured to help on
        # doc2dial/mtrag follow-ups together with the carried topic terms (docs/answers.md: answer chain figures)
        history = self._context(turn) if self.history_blend else None
        scored = self.searcher.search(query, turn.filters, k=self.settings.top_k, history=history,
                                      regions=turn.condensed.regions)
        qvec = self.embedder.embed_array([query])[0]  # memoised: the searcher just computed it
        sims = self._similarities([s.chunk.chunk_id for s in scored], qvec)
        sources = [Source(i + 1, s.chunk, s.score, sims.get(s.chunk.chunk_id, s.dense_similarity or 0.0))
                   for i, s in enumerate(scored)]
        # a procedural or timing question also gets the top document's steps/deadline chunks the top k left out
        extra = self.searcher.companions(scored, query, turn.filters)
        extra_sims = self._similarities([s.chunk.chunk_id for s in extra], qvec)
        companions = [Source(len(sources) + i + 1, s.chunk, 0.0, extra_sims.get(s.chunk.chunk_id, 0.0))
                      for i, s in enumerate(extra)]
        turn.retrieved = Retrieved(sources, 0.0, qvec, scored, companions)
        self._timed(turn, "retrieve", t)
        return turn

    # why: the compose stage: composer choice, fallback and confidence in the order they apply
    def _compose(self, turn: Turn) -> Turn:
        t = time.perf_counter()
        r = turn.retrieved
        if not r.sources or _SMALL_TALK_RE.match(turn.question) or self._person_requested(turn):
            turn.draft = Draft([], r.sources, turn.composer, no_answer=True)  # refused before composing
            self._timed(turn, "compose", t)
            return turn
        question = turn.question
        if turn.crisis and turn.filters.audience is Audience.PUBLIC:
            # the person at risk rarely uses the words of the help that answers them; an agent describing a case
            # does, and their "what do I do" must still get the SOP's steps
            question = f"{question} {CRISIS_QUERY}"
        request = ComposeRequest(question, turn.condensed, r.sources,
                                 turn.filters.audience.value, self._context(turn), self.weights(), r.query_vector,
                                 companions=r.companions, regions=turn.filters.regions or turn.condensed.regions)
        # The extractive selection is the evidence the answerability score weighs, whichever composer answers:
        # about 1-2 ms, and for the chat composer it decides before any model call is paid for.
        evidence = self.composer("extractive").run(request)
        turn.answerability = assess.features(
            turn.condensed, [s.similarity for s in r.sources], [s.chunk.embed_text for s in r.sources],
            [x.text for x in evidence.sentences], self.weights(), scored=r.scored,
            places=self.profile.place_words(turn.condensed.question))
        r.confidence = assess.score(turn.answerability)
        if r.confidence < self._floor(turn):
            turn.draft = Draft([], r.sources, turn.composer, no_answer=True)
        elif turn.composer == "extractive":
            turn.draft = evidence
            if turn.on_token:
                for sentence in evidence.sentences:
                    turn.on_token(sentence.text + " ")
        else:
            composer = self.composer(turn.composer)
            turn.evidence = evidence  # only a draft the model really wrote can fall back to it
            if turn.condensed.method == "chat":  # the model answers its own standalone rewrite of a follow-up
                request = replace(request, question=turn.condensed.standalone)
            try:
                turn.draft = (composer.stream(request, turn.on_token) if turn.on_token
                              else composer.run(request))
            except ModelEndpointError as exc:
                # the chat endpoint being down must not leave the requester without an answer
                log.warning("%s; answering extractively instead", exc)
                turn.draft = evidence  # the extractive selection already computed above
                turn.draft.composer = "extractive-fallback"
                turn.fallback_reason = str(exc)[:500]
        self._timed(turn, "compose", t)
        return turn

    def _similarities(self, chunk_ids: list[str], qvec: np.ndarray) -> dict[str, float]:
        """Cosine of the question (without the history blend) and each chunk, from the stored vectors.

        The blended search vector finds the right chunks for follow-ups, but it also makes off-topic questions
        look close to the conversation's documents; confidence and unit scoring use the question's own vector.
        Reading 6 stored vectors from Chroma takes about 0.5 ms."""
        if not chunk_ids:
            return {}
        try:
            return {cid: float(v @ qvec) for cid, v in self.index.stored_vectors(chunk_ids).items()}
        except Exception as exc:  # noqa: BLE001 - a store without vectors: use the search's own similarities
            log.debug("stored vectors unavailable (%s)", exc)
            return {}

    def _verify(self, turn: Turn) -> Turn:
        t = time.perf_counter()
        turn.verified = self.verifier.run(turn.draft, turn.filters)
        reason = fallback_reason(turn.draft, turn.verified, self.settings.chat_min_verified_sentences)
        if reason and turn.evidence is not None:  # the model's formatting must not cost the requester the answer
            log.info("chat draft replaced by the extractive answer: %s", reason)
            turn.draft, turn.fallback_reason = turn.evidence, reason
            turn.draft.composer = "extractive-fallback"
            turn.verified = self.verifier.run(turn.draft, turn.filters)
        self._timed(turn, "verify", t)
        return turn

    # assembling the Answer ---------------------------------------------------------------------------
    def _person_requested(self, turn: Turn) -> bool:
        # an agent asking how a user reaches a person asks a policy question; only the public is put through
        return turn.filters.audience is Audience.PUBLIC and asks_for_person(turn.question)

    def assess(self, turn: Turn) -> assess.Assessment:
        """The turn's outcome (answered | caution | refused), decided once by bot/answer/assess.py decide()."""
        r, v, d = turn.retrieved, turn.verified, turn.draft
        internal = turn.filters.audience is Audience.INTERNAL
        evidence = [x.text for x in d.sentences] if d and d.sentences else []
        return assess.decide(assess.Signals(
            internal=internal, confidence=float(r.confidence), answer_threshold=self.threshold(turn.filters),
            caution_threshold=min(self.threshold(turn.filters), self.settings.caution_threshold),
            missing=assess.missing_kind(turn.question, evidence),
            element=assess.missing_element(turn.question, evidence), crisis=turn.crisis,
            person_requested=self._person_requested(turn), small_talk=bool(_SMALL_TALK_RE.match(turn.question)),
            has_sources=bool(r.sources), blocked=v.blocked, supported=not d.no_answer and bool(v.sentences)))

    # why: assembles the Answer from every stage's output; each branch is one field's rule
    def _answer(self, turn: Turn, started: float) -> Answer:
        r, v, d = turn.retrieved, turn.verified, turn.draft
        audience = turn.filters.audience
        a = self.assess(turn)
        reason = a.reason
        refused = a.outcome == assess.REFUSED
        if not refused:
            text = v.text
            if a.outcome == assess.CAUTION:
                text = f"{CAUTION_LEAD.format(missing=a.missing)}\n{text}"
        elif reason == REFUSAL_NOT_A_QUESTION:
            text = NOT_A_QUESTION_TEXT
        elif reason == HANDOFF_REQUESTED:
            text = HANDOFF_TEXT
        else:
            text = REFUSAL_TEXT[audience.value]
        gen = self.index.generation()
        answer = Answer(
            question=turn.question,
            text=text,
            citations=v.citations if not refused else [],
            refused=refused,
            refusal_reason=f"{reason}: {REFUSAL_DETAIL[reason]}" if reason else "",
            confidence=round(float(r.confidence), 4),
            outcome=a.outcome,
            handoff_offered=a.handoff,
            composer=d.composer or turn.composer,
            standalone_question=turn.condensed.standalone,
            turn_decision=describe_decision(turn.condensed),
            retrieved_doc_ids=list(dict.fromkeys(s.chunk.doc_id for s in r.sources)),
            unsupported_removed=v.removed,
            fallback_reason=turn.fallback_reason,
        )
        if refused and reason not in (REFUSAL_NOT_A_QUESTION, HANDOFF_REQUESTED):
            answer.related = self._related(r.sources, audience)
            if answer.related:
                titles = "; ".join(x["title"] for x in answer.related)
                answer.text += f" Related articles: {titles}."
            if a.handoff:
                answer.text += " You can ask to talk to a person on our support team."
        if audience is Audience.INTERNAL and gen is not None:
            cited = [c.doc_id for c in answer.citations]
            if cited:
                answer.escalation = find_escalation(gen, list(dict.fromkeys(cited)), turn.question, self.queues(gen),
                                                    profile=self.profile)
            elif reason == REFUSAL_NO_SUPPORT:  # on-topic but unanswered: where the closest SOP sends such cases
                answer.escalation = find_escalation(gen, answer.retrieved_doc_ids[:3], turn.question,
                                                    self.queues(gen), reason_prefix="Closest SOP: ",
                                                    profile=self.profile)
        turn.timings["total"] = time.perf_counter() - started
        answer.timings = {k: round(v_, 6) for k, v_ in turn.timings.items()}
        log.info("answered %r outcome=%s reason=%s confidence=%.3f composer=%s",
                 redact_pii(turn.question)[:200], answer.outcome, reason, answer.confidence, answer.composer)
        return answer

    def _related(self, sources: list[Source], audience: Audience) -> list[dict[str, str]]:
        """Closest distinct documents, visible to the requester's audience, for a refusal."""
        out: list[dict[str, str]] = []
        seen: set[str] = set()
        for s in sources:
            m = s.chunk.metadata
            if s.chunk.doc_id in seen:
                continue
            if not visible_to(audience, m.get("audience")):
                continue  # retrieval already filtered; checked again because a refusal must never leak either
            seen.add(s.chunk.doc_id)
            out.append({"doc_id": s.chunk.doc_id, "title": m.get("title", s.chunk.doc_id), "url": m.get("url", "")})
            if len(out) == 3:
                break
        return out

    def _start(self, question: str, history, filters: Filters | None, composer: str | None) -> Turn:
        q, hist = validate_question(question, history, self.settings)
        name = (composer or self.settings.composer).lower()
        self.composer(name)  # validates the name (and configures chat) before any work is done
        return Turn(q, hist, filters or Filters(), name)

    # public API --------------------------------------------------------------------------------------
    def ask(self, question: str, history: list[dict] | None = None, filters: Filters | None = None,
            composer: str | None = None) -> Answer:
        """Answer one question (with optional history) under the requester's filters."""
        started = time.perf_counter()
        turn = self._start(question, history, filters, composer)
        turn = self.chain.invoke(turn)
        return self.checked(self._answer(turn, started), turn.filters)

    def checked(self, answer: Answer, filters: Filters) -> Answer:
        """A public answer that fails the leak check (bot/core/audience.py) becomes a refusal; others pass."""
        if filters.audience is not Audience.PUBLIC:
            return answer
        verdict = self.guard.check(answer)
        if not verdict.leaked:
            return answer
        log.error("SECURITY: public answer blocked: %s", "; ".join(verdict.reasons[:5]))
        return blocked_answer(answer, self.guard.public_related(answer), verdict.reasons)

    def stream(self, question: str, history: list[dict] | None = None, filters: Filters | None = None,
               composer: str | None = None) -> Iterator[AnswerEvent]:
        """TextEvents ("token" from a chat model, else "sentence") while composing, then one FinalEvent(Answer).

        Streamed text is provisional: the final answer holds only sentences whose citations verified.
        """
        started = time.perf_counter()
        turn = self._start(question, history, filters, composer)
        events: queue.Queue = queue.Queue()
        turn.on_token = lambda text: events.put(TextEvent("token", text))
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["answer"] = self.checked(self._answer(self.chain.invoke(turn), started), turn.filters)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = exc
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name="policydesk-answer", daemon=True)
        worker.start()
        streamed = False
        while True:
            ev = events.get()
            if ev is None:
                break
            if turn.composer == "chat":
                streamed = True
                yield ev
        worker.join()
        if "error" in result:
            raise result["error"]
        answer: Answer = result["answer"]
        if not streamed and not answer.refused:
            # extractive answers are complete at once: emit them sentence by sentence (with markers)
            for line in answer.text.split("\n"):
                if line.strip():
                    yield TextEvent("sentence", line)
        yield FinalEvent(answer)


def _invoke_text(chat: ChatComposer, messages: list[tuple[str, str]]) -> str:

    return message_text(chat.llm.invoke(messages))


def answer_question(question: str, history: list[dict] | None, filters: Filters, settings: Settings,
                    index: KnowledgeIndex | None = None, composer: str | None = None) -> Answer:
    """Answer one question; builds a service per call, so long-running surfaces should hold an AnswerService."""
    return AnswerService(settings, index).ask(question, history, filters, composer)


def stream_answer(question: str, history: list[dict] | None, filters: Filters, settings: Settings,
                  index: KnowledgeIndex | None = None, composer: str | None = None) -> Iterator[AnswerEvent]:
    """Streaming variant of answer_question (see AnswerService.stream for the events)."""
    yield from AnswerService(settings, index).stream(question, history, filters, composer)
