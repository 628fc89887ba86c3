"""Condense stage: turn a follow-up plus its history into a standalone question and a retrieval query.

First the turn is classified (decide_turn): a new question after unrelated turns is searched and answered exactly
as if asked alone; a follow-up ("how long does that take?", "and if he was in the US?") carries the most
distinctive terms of the earlier user turns (ranked by inverse document frequency in the index) into the
retrieval query, minus the place names it replaces. With a chat model configured, the model rewrites the question instead and the
deterministic rewrite is the fallback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from bot.core.models import ScoredChunk
from bot.core.profile import KBProfile
from bot.core.text import STOP_WORDS, TermWeights, analyze

log = logging.getLogger(__name__)

_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\-]*")
# words that point back at an earlier turn, so the question alone does not say what it is about
_ANAPHORA = frozenset(
    ["it", "its", "it's", "this", "that", "these", "those", "they", "them", "their", "theirs", "there", "he", "she", "his", "her", "him", "one", "ones", "same", "other", "others", "else", "such", "former", "latter", "above"]
)
# openers that continue the previous turn (read after leading fillers such as "ok", "thanks")
_CONTINUATIONS = ("and ", "and?", "but ", "so ", "also ", "then ", "what about", "how about", "what if",
                  "anything else", "what else", "or ", "instead")
# generic words that do not name a topic on their own
_GENERIC = frozenset(
    ["need", "want", "know", "tell", "please", "help", "thanks", "thank", "hi", "hello", "question", "ask", "asked", "get", "got", "make", "use", "used", "way", "thing", "things", "something", "anything", "also", "just", "like", "really", "much", "many", "long", "take", "takes", "time", "still", "yes", "no", "okay", "ok", "sure", "right", "well", "good", "great", "user", "users", "customer", "customers", "person", "people", "someone", "somebody", "agent", "agents"]
)
_GENERIC_STEMS = frozenset(analyze(" ".join(_GENERIC)))


@dataclass(frozen=True)
class Condensed:
    """The question as asked, what it means on its own, and what retrieval searches for.

    `question` is the question's own words without an opener that names no topic ("thx. unrelated - ..."),
    so filler never counts as content. `decision` says how the turn was read: "first" (no history), "new" (a new
    question: searched and answered exactly as if asked alone) or "follow-up" (carries the conversation's topic);
    `signals` are the reasons."""

    question: str
    standalone: str
    retrieval_query: str
    is_follow_up: bool = False
    carried_terms: tuple[str, ...] = field(default_factory=tuple)  # topic words taken from earlier turns
    method: str = "none"  # none | deterministic | chat
    decision: str = "first"  # first | new | follow-up
    signals: tuple[str, ...] = field(default_factory=tuple)
    # KB region codes the turn is about: the places the question names (Lyon -> EU), else for a follow-up the
    # region of the conversation so far; ranking and composing prefer that region's variant and row
    regions: tuple[str, ...] = ()
    opener: str = ""  # a leading segment that says nothing about the topic ("diff ticket -"), left out of `question`


def user_turns(history: Sequence[dict[str, str]] | None) -> list[str]:
    """Texts of the user turns of a history, oldest first."""
    return [(h.get("text") or h.get("content") or "") for h in history or []
            if str(h.get("role", "")).lower() in ("user", "human")]


# fillers that open a turn without saying whether it continues ("ok and ...", "thx. unrelated - ...")
_FILLER_RE = re.compile(r"^(?:(?:ok(?:ay)?|oh|ah|hm+|um+|wait|right|cool|great|sure|yes|yeah|no|nope|thanks|"
                        r"thank you|thx|ty|got it|perfect|hi|hello|hey)\b[\s,.!:;-]*)+", re.IGNORECASE)
# words that make a turn lean on the previous one's topic ("can she appeal instead?", "that one too")
_RELATIVE = frozenset(["instead", "too", "either", "also", "again", "still", "anymore", "otherwise"])


def _opening(question: str) -> str:
    """The question without leading fillers, lower-cased."""
    return _FILLER_RE.sub("", question.strip()).lower()


def topical_stems(text: str, weights: TermWeights) -> set[str]:
    """Stems of text that can name a topic: not stop, generic or pronoun words, and not in most chunks."""
    out = set()
    for word in _WORD_RE.findall(text):
        low = word.lower()
        short = len(low) < 3 and not any(ch.isdigit() for ch in low)  # codes such as "P1" or "2fa" count
        if low in STOP_WORDS or low in _GENERIC or low in _ANAPHORA or short:
            continue
        stems = analyze(low)
        if stems and stems[0] not in _GENERIC_STEMS and not weights.is_common(stems[0]):
            out.add(stems[0])
    return out


def _known(weights: TermWeights, stem: str) -> bool:
    """Whether the index uses a term (uniform weights know no words, so every word counts)."""
    return not weights.has_vocabulary or weights.known(stem)


SearchDocs = Callable[[str], Sequence[str]]  # text -> ids of the top documents a search for it returns
Search = Callable[[str], Sequence[ScoredChunk]]  # text -> the top chunks a search for it alone returns

# a leading segment of at most four words closed by punctuation or a dash ("diff ticket -", "new q:", "switching
# gears."); a single letter before the dot is an abbreviation ("U.S. user"), not the end of a segment
_LEAD_RE = re.compile(r"^\s*((?:\S+\s+){0,3}?\S*[^\s.:;!?\-–—])\s*(?:(?<!\b\w)\.+\s+|[:;!?]+\s+|[-–—]+\s+)")


def strip_opener(question: str, weights: TermWeights, search_docs: SearchDocs | None = None,
                 places: Callable[[str], set[str]] | None = None) -> tuple[str, str]:
    """(the question without its opener, the opener): leading fillers and up to two short segments that say
    nothing about the topic ("thx. unrelated - buyer in denver wants ...").

    A segment is an opener when what follows it is a question of its own (more than two topical words), it names
    no place, and it has no topical KB word, or a search for it finds none of the documents a search for the rest
    finds ("diff ticket" is about the conversation, "coin refunds -" about the policy asked). Without a search
    only a segment with no topical KB word is an opener. Nothing here is a list of phrases: the index decides."""
    rest = question.strip()
    for _ in range(2):
        body = _FILLER_RE.sub("", rest)
        m = _LEAD_RE.match(body)
        if m is None:
            break
        segment, remainder = m.group(1), body[m.end():]
        if len(topical_stems(remainder, weights)) <= 2 or (places and places(segment)):
            break
        if any(_known(weights, t) for t in topical_stems(segment, weights)) and (
                search_docs is None or set(search_docs(segment)[:3]) & set(search_docs(remainder)[:3])):
            break
        rest = remainder
    if rest == question.strip():
        return question, ""
    return rest, question.strip()[: len(question.strip()) - len(rest)].strip()


# why: the follow-up decision is one ordered list of signals, each returning its reason
def decide_turn(question: str, prior: Sequence[str], weights: TermWeights, search_docs: SearchDocs | None = None,
                depth: int = 3, opened: bool = False) -> tuple[str, tuple[str, ...]]:
    """("new" | "follow-up", signals) for a question asked after the user turns `prior` (oldest first).

    `question` comes without its opener (strip_opener; `opened` says one was there). In order: a continuation opener ("and if...", "what about") or a turn with at most two topical words is a follow-up;
    so is a turn sharing a topical word with the recent turns, or whose own search finds the same documents as
    the previous turn's (same topic in other words). A pronoun pointing back decides only when the question
    alone does not find a document of its own; neither it nor a relative word ("again") counts after an opener
    that set the question apart. Otherwise the question stands alone."""
    opening = _opening(question)
    words = [w.lower() for w in _WORD_RE.findall(opening)]
    topical = topical_stems(opening, weights)
    elliptic = len(topical) <= 2
    if opening.startswith(_CONTINUATIONS) or not opening:
        return "follow-up", ("continuation opener",)
    if elliptic:
        return "follow-up", ("at most two topical words",)
    if any(w in _RELATIVE for w in words) and not opened:
        return "follow-up", ("refers to the previous answer",)
    recent = prior[-2:]
    shared = {t for t in topical & set().union(*(topical_stems(t, weights) for t in recent)) if weights.known(t)}
    if shared:
        return "follow-up", ("shares terms: " + " ".join(sorted(shared)),)
    pronoun = any(w in _ANAPHORA for w in words) and not opened
    if search_docs is None:
        return ("follow-up", ("pronoun, no search",)) if pronoun else ("new", ("no shared terms",))
    found = list(search_docs(question))[:depth]
    # the recent user turns together: a short last turn ("No. It has gone up.") names no topic on its own
    before = list(dict.fromkeys(search_docs(" ".join(recent))))[:depth]
    common = sorted(set(found) & set(before))
    if common:
        return "follow-up", ("same documents as the previous turn: " + " ".join(common),)
    # confident alone: one document holds most of the question's top chunks
    confident = bool(found) and found.count(found[0]) * 2 > len(found)
    if pronoun and not confident:
        return "follow-up", ("pronoun, and the question alone finds no document of its own",)
    return "new", ("no shared terms or documents" + ("; the question alone finds its document" if pronoun else ""),)


class SearchProbe:
    """The condenser's view of retrieval for one turn: the top documents of a text searched alone under the
    requester's filters, each text searched once (the opener check and the decision probe the same texts)."""

    def __init__(self, search: Search):
        self._search = search
        self._seen: dict[str, Sequence[ScoredChunk]] = {}

    def _top(self, text: str) -> Sequence[ScoredChunk]:
        if text not in self._seen:
            self._seen[text] = self._search(text)
        return self._seen[text]

    def docs(self, text: str) -> list[str]:
        """Document ids of the top chunks a search for text returns, best first (repeats kept)."""
        return [s.chunk.doc_id for s in self._top(text)]


def describe_decision(condensed: Condensed) -> str:
    """One line for the Answer and the logs: the decision and its signals ("follow-up (continuation opener)")."""
    return f"{condensed.decision} ({'; '.join(condensed.signals)})" if condensed.signals else condensed.decision


class DeterministicCondenser:
    """Decide whether a turn follows up; carry the distinctive terms of earlier user turns into a follow-up."""

    def __init__(self, max_terms: int = 6, turns: int = 2, always: bool = False,
                 profile: KBProfile | None = None):
        self.max_terms = max_terms
        self.turns = turns
        self.always = always  # carry topic terms even when the question looks self-contained
        # the KB profile names places and their regions: a follow-up naming its own region replaces the earlier
        # turns' region instead of searching both ("and if he was in the US?"); without one, no place is known
        self.profile = profile

    def region_words(self, text: str) -> set[str]:
        """Lower-case words of text that name a place (none without a profile)."""
        return self.profile.place_words(text) if self.profile else set()

    def regions(self, text: str) -> tuple[str, ...]:
        """KB region codes of the places text names (none without a profile or regional rules)."""
        return self.profile.region_hints(text) if self.profile else ()

    # why: opener, decision, region and carried terms in the order they apply; each step is one line of docs/answers.md
    def run(self, question: str, history: Sequence[dict[str, str]] | None,
            weights: TermWeights | None = None, search: Search | None = None) -> Condensed:
        """Rewrite one question; with no history the question (without its opener) is its own standalone form.
        `search` (a text searched alone under the requester's filters) gives the opener and decision signals."""
        weights = weights or TermWeights.uniform()
        search_docs = SearchProbe(search).docs if search else None
        own, opener = strip_opener(question, weights, search_docs, self.region_words if self.profile else None)
        regions = self.regions(own)
        prior = [t for t in user_turns(history) if t.strip()][-self.turns:]
        if not prior:
            return Condensed(own, own, own, regions=regions, opener=opener)
        decision, signals = ("follow-up", ("always carry",)) if self.always else \
            decide_turn(own, prior, weights, search_docs, opened=bool(opener))
        if decision == "new":
            return Condensed(own, own, own, method="deterministic", decision="new", signals=signals,
                             regions=regions, opener=opener)
        # a follow-up that names no place stays in the conversation's region ("what if it's been 16 days?")
        regions = regions or next((r for t in reversed(prior) if (r := self.regions(t))), ())
        question = own
        # a follow-up that already names the topic (it shares the earlier turn's topical words) keeps the history
        # for the search but carries no words: "steps to obtain Vulnerability Advisor v4?" after "I have version
        # 3" must not search for version 3 (measured on mtrag: 2 of 127 questions lost otherwise)
        leans = not signals[0].startswith("shares terms")
        terms = self.topic_terms(question, prior, weights) if leans else []
        if not terms:
            return Condensed(question, question, question, is_follow_up=True, method="deterministic",
                             decision="follow-up", signals=signals, regions=regions, opener=opener)
        carried = " ".join(terms)
        standalone = f"{question} (about: {carried})"
        return Condensed(question, standalone, f"{question} {carried}", is_follow_up=True,
                         carried_terms=tuple(terms), method="deterministic", decision="follow-up",
                         signals=signals, regions=regions, opener=opener)

    # why: one pass over the history's terms; each branch is one signal docs/answers.md lists
    def topic_terms(self, question: str, prior: list[str], weights: TermWeights) -> list[str]:
        """The most distinctive words of the earlier turns (newest turn first) not already in the question.

        When the question names a region of its own, the earlier turns' place names stay behind: the follow-up
        changes the region and keeps the topic."""
        have = set(analyze(question))
        places = self.region_words(question)
        drop = set().union(*(self.region_words(t) for t in prior)) if places else set()
        scored: dict[str, tuple[float, int, str]] = {}
        order = 0
        for age, turn in enumerate(reversed(prior)):  # age 0 = the turn just before this question
            for word in _WORD_RE.findall(turn):
                low = word.lower()
                if low in STOP_WORDS or low in _GENERIC or low in _ANAPHORA or len(low) < 3 or low in drop:
                    continue
                stems = analyze(low)
                if not stems or stems[0] in have or stems[0] in STOP_WORDS:  # "whats" stems to "what"
                    continue
                stem = stems[0]
                # a word the index never uses ("cust", "whats") cannot steer the search or the score
                if stem in _GENERIC_STEMS or weights.is_common(stem) or not _known(weights, stem):
                    continue
                score = weights.idf(stem) * (1.0 if age == 0 else 0.6)
                if stem not in scored or scored[stem][0] < score:
                    scored[stem] = (score, order, word)
                order += 1
        best = sorted(scored.values(), key=lambda x: (-x[0], x[1]))[: self.max_terms]
        return [w for _, _, w in sorted(best, key=lambda x: x[1])]


class ChatCondenser:
    """Ask the chat model for a standalone rewrite; fall back to the deterministic rewrite on any failure."""

    def __init__(self, invoke: Callable[[list[tuple[str, str]]], str], fallback: DeterministicCondenser):
        self._invoke = invoke
        self._fallback = fallback

    def run(self, question: str, history: Sequence[dict[str, str]] | None,
            weights: TermWeights | None = None, search: Search | None = None) -> Condensed:
        """Rewrite a follow-up with the model; a new question stays as asked (the deterministic decision)."""
        from bot.answer.prompts import condense_messages

        base = self._fallback.run(question, history, weights, search)
        if not user_turns(history) or base.decision != "follow-up":
            return base
        try:
            text = self._invoke(condense_messages(question, history or []))
        except Exception as exc:  # noqa: BLE001 - the endpoint being down must not stop the answer
            log.warning("chat condense failed (%s); using the deterministic rewrite", exc)
            return base
        line = " ".join(text.strip().splitlines()[:1]).strip().strip('"')
        if not line or len(line) > 4 * max(len(question), 100):
            return base
        # A weak model echoes the prompt's tags, answers, or drops the topic ("How long does payments ops get to
        # decide?" after a chargeback turn): a rewrite must keep a topic word the deterministic decision carried
        # from earlier turns, else the deterministic rewrite stands (SmolLM2-135M lost 2 of 20 eval-dev follow-ups).
        carried = set(analyze(" ".join(base.carried_terms)))
        if "<" in line or (carried and not carried & set(analyze(line))):
            log.info("chat condense dropped the topic (%r); using the deterministic rewrite", line[:120])
            return base
        # The rewrite is what the model is asked to answer; the search keeps the deterministic query, so the
        # sources and the assessment are exactly the offline answer's and composer=chat cannot answer less.
        return replace(base, standalone=line, method="chat")


# ---- what a question asks for --------------------------------------------------------------------------
# Read by retrieval (a prior for procedure documents, a region hint) and by the extractive composer (keep the
# procedure's steps together, add the deadline). Hints only: nothing here filters what a requester may see.
