"""Compose stage: turn numbered sources into a draft answer whose every sentence names its source and quote.

Two composers share one interface (`Composer.run` does the shared work, subclasses implement `_compose`):
- ExtractiveComposer (offline default): picks the sentences, list items, steps and table rows that answer the
  question, scored by idf-weighted lexical overlap plus the MiniLM cosine of their chunk (optionally their own),
  with MMR-style redundancy control; keeps numbered steps together for how-to questions. For an agent's
  procedural question ("what do I do", "how do I handle") it answers with the main SOP's numbered steps, kept
  together, led by the one unit that fits the question's particular case better than any step; when the question
  asks by when ("by when", "how long", "deadline") it adds the sentence of that document stating the deadline.
  Its quotes are the exact source spans it picked.
- ChatComposer: an OpenAI-compatible chat model (langchain-openai ChatOpenAI) asked for [n] markers and one exact
  quote per cited source; the verify stage checks every marker and quote it returns.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from bot.condense import Condensed, TermWeights, asks_timing, is_procedural, region_hints
from bot.config import Settings
from bot.errors import ModelEndpointError
from bot.guard import looks_like_injection
from bot.lexical import analyze
from bot.models import Chunk
from bot.prompts import NO_ANSWER, QUOTES_HEADER, answer_messages, format_history, format_source
from bot.retrieval import main_document
from bot.units import DEADLINE_HEAD_RE, DEADLINE_WORDS_RE, DURATION_RE, Unit, region_conflict, split_units

log = logging.getLogger(__name__)

TokenSink = Callable[[str], None]

# What kind of answer a question wants, and what a unit that gives it contains (a small ranking bonus).
_ANSWER_TYPES: list[tuple[re.Pattern, re.Pattern]] = [
    (re.compile(r"\bhow (long|quickly|fast|soon)\b|\bdeadline\b|\bwhen\b|\bwithin\b|\bhow much time\b|"
                r"\bwindow\b|\bhow many (days|hours|weeks)\b|\bsla\b|\btime limit\b", re.IGNORECASE),
     re.compile(r"\b\d+\s*-?\s*(business |calendar |working )?(days?|hours?|minutes?|weeks?|months?|years?)\b|"
                r"\b(one|two|three) (days?|hours?|weeks?|months?)\b|\bimmediately\b|\bstraight away\b", re.IGNORECASE)),
    (re.compile(r"\bhow much\b|\bcost\b|\bfees?\b|\bprice\b|\bthreshold\b|\bamount\b|\brate\b", re.IGNORECASE),
     re.compile(r"(USD|EUR|GBP|\$|€|£)\s?\d|\d\s?(USD|EUR|GBP|%|percent)|\bfree\b|\bno (fee|charge)\b", re.IGNORECASE)),
    (re.compile(r"\bwho\b|\bwhich (team|queue)\b|\bpriority\b|\bescalat|\broute\b|\bpage\b|\bqueue\b", re.IGNORECASE),
     re.compile(r"`[a-z0-9]+(-[a-z0-9]+)+`|\bP[1-4]\b|\bteam\b|\bqueue\b|\brotation\b")),
    (re.compile(r"\bhow old\b|\bage\b|\bminimum age\b", re.IGNORECASE),
     re.compile(r"\b\d{1,2}\b[^.]{0,30}\b(old|older|younger|age)\b|\bunder \d{1,2}\b|\baged? \d{1,2}\b", re.IGNORECASE)),
    (re.compile(r"^\s*(can|could|may|is it|are we|do we|does|is there|am i|should)\b|\ballowed\b|\bpossible\b", re.IGNORECASE),
     re.compile(r"\b(can't|cannot|can not|never|only|must|do not|don't|not allowed|may not|no one|always|"
                r"is not|are not|isn't|aren't|won't)\b", re.IGNORECASE)),
]


EXTENSION_RE = re.compile(r"\bextend(?:ed|s|able)?\b|\bextension\b", re.IGNORECASE)
SCOPE_SECTION_RE = re.compile(r"\b(?:when this applies|scope|applies to|purpose|overview)\b", re.IGNORECASE)


def answer_type_bonus(question: str, text: str) -> float:
    """1.0 when the unit contains the kind of thing the question asks for (a duration, an amount, a queue...)."""
    for asks, gives in _ANSWER_TYPES:
        if asks.search(question):
            return 1.0 if gives.search(text) else 0.0
    return 0.0


@dataclass(frozen=True)
class Source:
    """A retrieved chunk as it is offered to a composer, with its 1-based number."""

    number: int
    chunk: Chunk
    score: float = 0.0  # fused retrieval score
    similarity: float = 0.0  # cosine of the query and the chunk (0 when the dense retriever did not return it)


@dataclass(frozen=True)
class DraftCitation:
    """A [n] marker the composer put on a sentence and the quote it claims supports it."""

    number: int
    quote: str


@dataclass
class DraftSentence:
    """One sentence, step or list item of a draft with the citations its composer attached."""

    text: str
    citations: list[DraftCitation]
    kind: str = "sentence"  # sentence | lead | step | item | row
    marker: str = ""  # list marker ("3.") kept for steps shown as a list


@dataclass
class Draft:
    """A composer's answer before verification."""

    sentences: list[DraftSentence]
    sources: list[Source]
    composer: str
    no_answer: bool = False
    support: float = 0.0  # the composer's own evidence score in [0, 1] (extractive: best unit score)
    raw: str = ""  # the raw model output (chat), kept for debugging and the audit log


@dataclass
class ComposeRequest:
    """What a composer is given: the question, its condensed form, the numbered sources and the requester."""

    question: str
    condensed: Condensed
    sources: list[Source]
    audience: str = "internal"
    history: list[dict[str, str]] = field(default_factory=list)
    weights: TermWeights = field(default_factory=TermWeights.uniform)
    query_vector: np.ndarray | None = None
    # chunks of the top document the retriever added for a procedural or timing question (its steps, its
    # deadline), numbered after `sources`; composers may cite them like any source
    companions: list[Source] = field(default_factory=list)

    @property
    def all_sources(self) -> list[Source]:
        """The ranked sources followed by the companions."""
        return self.sources + self.companions


_PHRASE_WORD_RE = re.compile(r"[a-z0-9]+")
_PHRASE_STOP = frozenset(["a", "an", "the", "of", "to", "in", "for", "is", "are", "be", "do", "does", "did", "i", "we", "you", "it", "my", "our", "your", "how", "what", "when", "can", "and", "or"])


def phrases(text: str) -> set[tuple[str, str]]:
    """Adjacent word pairs (lower-case, stop words kept so 'turn on' differs from 'turn off'), minus pairs of
    two stop words."""
    words = _PHRASE_WORD_RE.findall(text.lower())
    return {(a, b) for a, b in pairwise(words) if not (a in _PHRASE_STOP and b in _PHRASE_STOP)}


def is_howto(question: str) -> bool:
    """Whether a question asks how to do something (so numbered steps should be kept together)."""
    return is_procedural(question)


class Composer(ABC):
    """One interface for every composer; `run` handles the shared cases, subclasses implement `_compose`."""

    name = "composer"

    def run(self, request: ComposeRequest) -> Draft:
        """Compose a draft; with no sources the draft is an honest no-answer."""
        if not request.sources:
            return Draft([], [], self.name, no_answer=True)
        draft = self._compose(request)
        draft.sentences = [s for s in draft.sentences if s.text.strip()]
        draft.composer = self.name
        if not draft.sentences:
            draft.no_answer = True
        return draft

    def stream(self, request: ComposeRequest, on_token: TokenSink) -> Draft:
        """Compose, reporting text as it is produced; composers that cannot stream report it at the end."""
        draft = self.run(request)
        for s in draft.sentences:
            on_token(s.text + " ")
        return draft

    @abstractmethod
    def _compose(self, request: ComposeRequest) -> Draft:
        """Subclass hook: the draft for a request with at least one source."""


# ---- extractive ----------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    source: Source
    unit: Unit
    lex: float
    rank: float  # 1 for the first retrieved source, falling linearly
    sem: float | None = None
    kind_bonus: float = 0.0  # the unit holds the kind of thing asked for
    phrase: float = 0.0  # share of the question's word pairs in the unit or its heading
    score: float = 0.0


class ExtractiveComposer(Composer):
    """Pick and cite the source units that answer the question; no model, no network."""

    name = "extractive"

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray] | None, max_units: int = 3,
                 max_steps: int = 12, embed_units: int = 0, max_chars: int = 700, min_relative: float = 0.72,
                 redundancy: float = 0.6, sem_weight: float = 0.25, lex_weight: float = 0.35,
                 sim_weight: float = 0.4, rank_weight: float = 0.1, type_weight: float = 0.1,
                 length_penalty: float = 0.1, typical_terms: int = 15, same_doc_bonus: float = 0.0,
                 phrase_weight: float = 0.15, case_ratio: float = 0.75,
                 lead_margin: float = 1.15):
        self.embed = embed
        self.max_units = max_units
        self.max_steps = max_steps
        self.embed_units = embed_units  # embedding every unit costs ~10 ms each on 2 cores: only the best few
        self.max_chars = max_chars
        self.min_relative = min_relative
        self.redundancy = redundancy
        self.sem_weight, self.lex_weight = sem_weight, lex_weight  # unit-question cosine, idf-weighted overlap
        self.sim_weight, self.rank_weight = sim_weight, rank_weight  # chunk-question cosine, retrieval rank
        self.type_weight = type_weight  # unit holds the kind of answer asked for (duration, amount, queue...)
        self.phrase_weight = phrase_weight  # word pairs keep 'turn on' apart from 'turn off'
        self.length_penalty, self.typical_terms = length_penalty, typical_terms
        self.same_doc_bonus = same_doc_bonus  # later picks from the first pick's document read as one answer
        self.case_ratio = case_ratio  # steps answer a procedural question unless its best unit is this much better
        self.lead_margin = lead_margin  # a unit outside the steps leads them when it beats the best step by this

    # scoring ---------------------------------------------------------------------------------------------
    def _query_weights(self, request: ComposeRequest) -> dict[str, float]:
        """Stemmed question terms weighted by idf; terms carried from earlier turns weigh half."""
        w: dict[str, float] = {}
        for t in analyze(request.condensed.question):
            w[t] = request.weights.idf(t)
        for t in analyze(" ".join(request.condensed.carried_terms)):
            w.setdefault(t, 0.5 * request.weights.idf(t))
        return w

    def candidates(self, request: ComposeRequest, units_by_source: dict[int, list[Unit]]) -> list[_Candidate]:
        """Every unit of every source with its lexical and rank scores, injection-looking text dropped.

        The lexical score is the idf-weighted share of question terms the unit contains (section headings and
        the title count at 0.3), damped for long units so a sentence that says one thing beats a paragraph
        that mentions everything. A list's lead-in ("You can get a refund if both of these are true:") is
        scored with its items, since together they are the statement. Fills units_by_source (all units of
        each source, short ones included) for the list expansion."""
        qw = self._query_weights(request)
        total = sum(qw.values()) or 1.0
        q_phrases = phrases(request.condensed.question)
        out: list[_Candidate] = []
        n = len(request.sources)
        question = request.condensed.question
        doc_prior: dict[str, float] = {}
        for rank, src in enumerate(request.sources):
            doc_prior.setdefault(src.chunk.doc_id, 1.0 - rank / max(n, 1))
        for rank, src in enumerate(request.all_sources):
            heading = " ".join((src.chunk.metadata.get("title", ""),) + src.chunk.section_path)
            head_terms = set(analyze(heading))
            head_phrases = phrases(" ".join(src.chunk.section_path))
            # a companion chunk belongs to a ranked document: it shares that document's prior
            rank_prior = 1.0 - rank / max(n, 1) if rank < n else doc_prior.get(src.chunk.doc_id, 0.0)
            # text addressed to the assistant is not policy content, whatever it says: drop its whole paragraph
            units = split_units(src.chunk.text)
            tainted = {u.block for u in units if looks_like_injection(u.display)}
            units = [u for u in units if u.block not in tainted]
            units_by_source[src.number] = units
            for unit in units:
                if len(unit.display) < 12 or len(unit.terms) < 3:
                    continue
                terms, length = unit.terms, len(unit.terms)
                if unit.kind == "lead":
                    items = [u for u in units if u.list_id == unit.list_id and u.kind in ("step", "item")]
                    terms = terms.union(*(u.terms for u in items))
                    length = len(terms)
                hit = sum(v for t, v in qw.items() if t in terms)
                head = sum(v for t, v in qw.items() if t in head_terms and t not in terms)
                damp = 1.0 / (1.0 + self.length_penalty * max(0.0, length / self.typical_terms - 1.0))
                lex = min((hit + 0.3 * head) / total, 1.0) * damp
                if "{{" in unit.display:
                    lex *= 0.3  # a template line with placeholders ("Hi {{first_name}}") states no policy
                cand = _Candidate(src, unit, lex, rank_prior)
                cand.kind_bonus = answer_type_bonus(question, unit.display)
                if q_phrases:  # word pairs of the question found in the unit or its section heading
                    cand.phrase = len(q_phrases & (phrases(unit.display) | head_phrases)) / len(q_phrases)
                out.append(cand)
        return out

    def score(self, request: ComposeRequest, cands: list[_Candidate]) -> list[_Candidate]:
        """Rank units by lexical overlap and source prior, then re-rank the best few with the embedder.

        Embedding a unit costs about 10 ms on 2 cores, so only the top `embed_units` are embedded; only they
        can be chosen when the embedder is used, so every compared score has the same terms."""
        for c in cands:
            c.score = (self.lex_weight * c.lex + self.sim_weight * max(c.source.similarity, 0.0)
                       + self.rank_weight * c.rank + self.type_weight * c.kind_bonus + self.phrase_weight * c.phrase)
        ranked = sorted(cands, key=lambda c: -c.score)
        if self.embed is None or request.query_vector is None or not self.embed_units or not ranked:
            return ranked
        best = ranked[: self.embed_units]
        sims = self.embed([c.unit.display for c in best]) @ request.query_vector
        for c, s in zip(best, sims):
            c.sem = float(s)
            c.score += self.sem_weight * c.sem
        return sorted(best, key=lambda c: -c.score)

    # selection -------------------------------------------------------------------------------------------
    @staticmethod
    def _overlap(a: Unit, b: Unit) -> float:
        if not a.terms or not b.terms:
            return 0.0
        return len(a.terms & b.terms) / min(len(a.terms), len(b.terms))

    def _list_for(self, best: _Candidate, cands: list[_Candidate], kinds: tuple[str, ...],
                  units: dict[int, list[Unit]]) -> list[_Candidate]:
        """The whole list a unit belongs to (with its lead-in), in source order, short items included."""
        known = {c.unit.position: c for c in cands if c.source.number == best.source.number}
        out = [known.get(u.position) or _Candidate(best.source, u, 0.0, best.rank)
               for u in units.get(best.source.number, [])
               if u.list_id == best.unit.list_id and u.kind in kinds]
        return out[: self.max_steps + 1]

    def _best_steps(self, ranked: list[_Candidate], cands: list[_Candidate], units: dict[int, list[Unit]]
                    ) -> list[_Candidate]:
        """For a how-to: the numbered list whose best step scores highest, if it holds up against the best unit."""
        lists: dict[tuple[int, int], float] = {}
        for c in cands:
            if c.unit.kind in ("step", "lead") and c.unit.list_id is not None:
                key = (c.source.number, c.unit.list_id)
                lists[key] = max(lists.get(key, 0.0), c.score)
        if not lists:
            return []
        (number, list_id), score = max(lists.items(), key=lambda kv: kv[1])
        if score < ranked[0].score * 0.75:
            return []
        anchor = next(c for c in cands if c.source.number == number and c.unit.list_id == list_id)
        chosen = self._list_for(anchor, cands, ("step", "lead"), units)
        return chosen if sum(1 for c in chosen if c.unit.kind == "step") >= 2 else []

    @staticmethod
    def main_document(request: ComposeRequest) -> str:
        """The document whose procedure answers the question (bot.retrieval.main_document: for agents the
        best-ranked SOP among the first three sources), the same one the retriever took companions from."""
        return main_document([s.chunk for s in request.sources], request.audience)

    def _procedure(self, request: ComposeRequest, ranked: list[_Candidate], cands: list[_Candidate],
                   units: dict[int, list[Unit]], main: str) -> list[_Candidate]:
        """The main document's numbered steps, kept together, led (for agents) by the unit that fits the
        question's particular case better than any step; [] when that document has no steps or the question is
        about one case only (its best unit is far better than every step: "how do I route a post made while the
        account was compromised?")."""
        lists: dict[tuple[int, int], float] = {}
        for c in cands:
            if c.source.chunk.doc_id == main and c.unit.kind == "step" and c.unit.list_id is not None:
                key = (c.source.number, c.unit.list_id)
                lists[key] = max(lists.get(key, 0.0), c.score)
        if not lists:
            return []
        (number, list_id), best_step = max(lists.items(), key=lambda kv: kv[1])
        # A scope section ("When this applies") restates the situation the agent is describing, so it always
        # fits the question well; it says which procedure applies, not that the question is about one case.
        cases = [c.score for c in ranked if not SCOPE_SECTION_RE.search(" ".join(c.source.chunk.section_path))]
        if cases and best_step < cases[0] * self.case_ratio:
            return []
        anchor = next(c for c in cands if c.source.number == number and c.unit.list_id == list_id)
        steps = self._list_for(anchor, cands, ("step", "lead"), units)
        if sum(1 for c in steps if c.unit.kind == "step") < 2:
            return []
        log.debug("procedure %s: best step %.3f, best unit %.3f", main, best_step, ranked[0].score)
        if request.audience != "internal":  # the public gets the article's steps as written
            return steps
        in_list = {(c.source.number, c.unit.position) for c in steps}
        for lead in ranked:  # the main document's best unit outside the steps, if it beats every step
            if lead.score <= best_step * self.lead_margin:
                break
            if SCOPE_SECTION_RE.search(" ".join(lead.source.chunk.section_path)):
                continue
            if (lead.source.chunk.doc_id != main or lead.unit.kind not in ("sentence", "item", "row")
                    or (lead.source.number, lead.unit.position) in in_list):
                continue
            if not any(self._overlap(lead.unit, s.unit) > self.redundancy for s in steps):
                return [lead] + steps
        return steps

    def _deadline(self, request: ComposeRequest, cands: list[_Candidate], chosen: list[_Candidate], main: str
                  ) -> list[_Candidate]:
        """The unit of the main document that states its deadline or SLA best (a duration, deadline words, a
        heading such as "SLA"), when the answer does not state one yet."""
        have = {(c.source.number, c.unit.position) for c in chosen}
        if any(DURATION_RE.search(c.unit.display) and DEADLINE_WORDS_RE.search(c.unit.display) for c in chosen
               if c.unit.kind != "step"):
            return []
        hints = region_hints(request.condensed.question)
        scored: list[tuple[float, _Candidate]] = []
        for c in cands:
            if c.source.chunk.doc_id != main or (c.source.number, c.unit.position) in have:
                continue
            if c.unit.kind in ("step", "lead") or not DURATION_RE.search(c.unit.display):
                continue
            if hints and region_conflict(c.unit.display, hints):  # "a user in Germany": not the US row's 45 days
                continue
            worded = DEADLINE_WORDS_RE.search(c.unit.display) is not None
            headed = DEADLINE_HEAD_RE.search(" ".join(c.source.chunk.section_path)) is not None
            value = c.score + 0.2 * worded + 0.2 * headed
            scored.append((value, c))
        scored.sort(key=lambda x: -x[0])
        picked: list[_Candidate] = []
        for value, c in scored:
            if any(self._overlap(c.unit, o.unit) > self.redundancy for o in chosen + picked):
                continue
            # a second deadline unit (an extension, a stricter internal target) only when it is nearly as good
            if picked and (value < 0.8 * scored[0][0] or not DEADLINE_WORDS_RE.search(c.unit.display)):
                break
            picked.append(c)
            if len(picked) == 2:
                break
        # A deadline that can be extended is only half stated without its extension ("one month" vs "one month,
        # extendable by two further months"): add the main document's extension unit when one was retrieved.
        said = chosen + picked
        if picked and not any(EXTENSION_RE.search(o.unit.display) for o in said):
            for _, c in scored:
                if (EXTENSION_RE.search(c.unit.display) and c not in picked
                        and not any(self._overlap(c.unit, o.unit) > self.redundancy for o in said)):
                    picked.append(c)
                    break
        return picked

    def select(self, request: ComposeRequest, ranked: list[_Candidate], cands: list[_Candidate],
               units: dict[int, list[Unit]]) -> list[_Candidate]:
        """Units for the answer: the steps of a how-to (the main SOP's, for agents), else the best few
        non-redundant units (greedy, MMR-style: a unit repeating one already chosen is skipped; a lead-in brings
        its list); plus the main document's deadline when the question asks by when."""
        if not ranked:
            return []
        question = request.condensed.question
        main = self.main_document(request)
        timing = asks_timing(question)
        if is_howto(question):
            steps = self._procedure(request, ranked, cands, units, main) or self._best_steps(ranked, cands, units)
            if steps:
                return steps + (self._deadline(request, cands, steps, main) if timing else [])
        chosen = self._greedy(request, ranked, cands, units)
        if timing and chosen:
            # the deadline of the document the answer is about (its first pick), not of a neighbour
            chosen += self._deadline(request, cands, chosen, chosen[0].source.chunk.doc_id)
        return chosen

    def _greedy(self, request: ComposeRequest, ranked: list[_Candidate], cands: list[_Candidate],
                units: dict[int, list[Unit]]) -> list[_Candidate]:
        """The best few non-redundant units, grouped by source and in reading order within a source."""
        floor = ranked[0].score * self.min_relative
        pool = [c for c in ranked if c.score >= floor]
        chosen: list[_Candidate] = []
        picked = 0
        length = 0
        while pool and picked < self.max_units:
            first_doc = chosen[0].source.chunk.doc_id if chosen else None
            best = max(pool, key=lambda c: c.score + (self.same_doc_bonus if c.source.chunk.doc_id == first_doc
                                                      else 0.0))
            pool.remove(best)
            block = [best]
            if best.unit.kind == "lead":  # a lead-in ends in ':' and is only a statement with its list
                block = self._list_for(best, cands, ("lead", "step", "item"), units)
                if len(block) < 2:
                    continue
            if any(self._overlap(b.unit, o.unit) > self.redundancy for b in block for o in chosen):
                continue
            size = sum(len(b.unit.display) for b in block)
            if chosen and length + size > self.max_chars:
                continue
            have = {(c.source.number, c.unit.position) for c in chosen}
            chosen.extend(b for b in block if (b.source.number, b.unit.position) not in have)
            picked += 1
            length += size
        # present them grouped by source (best source first) and in reading order within a source
        first_seen: dict[int, int] = {}
        for i, c in enumerate(chosen):
            first_seen.setdefault(c.source.number, i)
        chosen.sort(key=lambda c: (first_seen[c.source.number], c.unit.position))
        return chosen

    def _compose(self, request: ComposeRequest) -> Draft:
        units: dict[int, list[Unit]] = {}
        cands = self.candidates(request, units)
        ranked = self.score(request, cands)
        chosen = self.select(request, ranked, cands, units)
        if not chosen:
            return Draft([], request.all_sources, self.name, no_answer=True)
        # one citation per contiguous run of units from one chunk: its quote is the exact span they cover
        sentences: list[DraftSentence] = []
        groups: list[list[_Candidate]] = []
        for c in chosen:
            if (groups and groups[-1][-1].source.number == c.source.number
                    and groups[-1][-1].unit.position + 1 == c.unit.position):
                groups[-1].append(c)
            else:
                groups.append([c])
        per_list: dict[tuple[int, int | None], int] = {}
        for c in chosen:
            if c.unit.kind in ("step", "item"):
                per_list[(c.source.number, c.unit.list_id)] = per_list.get((c.source.number, c.unit.list_id), 0) + 1
        listed = {key for key, count in per_list.items() if count >= 2}  # shown as a list, not as loose lines
        for g in groups:
            text = g[0].source.chunk.text
            quote = text[g[0].unit.start:g[-1].unit.end]
            cite = DraftCitation(g[0].source.number, quote)
            for c in g:
                kind = c.unit.kind
                if kind in ("step", "item", "row") and (c.source.number, c.unit.list_id) not in listed:
                    kind = "sentence"  # one step picked on its own reads as a sentence, not as "3. ..."
                sentences.append(DraftSentence(c.unit.display, [cite], kind, c.unit.marker))
        support = max(c.score for c in chosen)
        return Draft(sentences, request.all_sources, self.name, support=support)


# ---- chat model ----------------------------------------------------------------------------------------

_MARKER_RE = re.compile(r"\[(\d{1,3})\]")
_QUOTE_LINE_RE = re.compile(r"^\s*[-*]?\s*\[(\d{1,3})\]\s*[:\-–—]?\s*[\"“”„'‘](.+)[\"“”'’]\s*$")
_QUOTES_SPLIT_RE = re.compile(r"^\s*\**\s*quotes?\s*:?\s*\**\s*$", re.IGNORECASE | re.MULTILINE)
_SENT_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])|(?<=\])\s+(?=[A-Z0-9\"“(])")
_LIST_LINE_RE = re.compile(r"^\s*(\d+[.)]|[-*•])\s+")


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
        if not line.strip():
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

    @property
    def llm(self):
        """The ChatOpenAI client, built on first use from Settings."""
        if self._llm is None:
            self._llm = build_chat_model(self.settings)
        return self._llm

    def messages(self, request: ComposeRequest) -> tuple[list[tuple[str, str]], list[Source]]:
        """Prompt messages within the model's context window, and the sources that fit into it."""
        from bot.tokens import encoding_for_model

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
        return answer_messages(request.question, blocks, history, request.audience), given

    def _compose(self, request: ComposeRequest) -> Draft:
        msgs, given = self.messages(request)
        try:
            raw = _content(self.llm.invoke(msgs))
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
                raw += _content(chunk)
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


def _content(message) -> str:
    """Text of a LangChain message or chunk (content may be a string or a list of parts)."""
    content = getattr(message, "content", message)
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


def build_chat_model(settings: Settings):
    """ChatOpenAI for OpenAI or any OpenAI-compatible server, configured only from Settings."""
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
        "timeout": settings.chat_timeout_s,
        "max_retries": 1,
    }
    if settings.send_max_tokens_in_extra_body:
        # llama.cpp / vLLM ignore max_completion_tokens, which is what langchain-openai sends for max_tokens
        kwargs["extra_body"] = {"max_tokens": settings.chat_max_tokens}
    else:
        kwargs["max_tokens"] = settings.chat_max_tokens
    return ChatOpenAI(**kwargs)


def iter_tokens(text: str) -> Iterator[str]:
    """Split text into word-sized pieces for surfaces that animate non-streaming answers."""
    yield from re.findall(r"\S+\s*", text)
