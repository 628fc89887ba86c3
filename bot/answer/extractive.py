"""The offline composer: picks the source sentences, steps and rows that answer the question (exact quotes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.answer.compose import (
    EXTENSION_RE,
    Composer,
    ComposeRequest,
    Draft,
    DraftCitation,
    DraftSentence,
    Source,
    answer_type_bonus,
    ask_weights,
    asks_value,
    is_howto,
    phrases,
    query_weights,
    requester_regions,
    self_referential,
)
from bot.answer.safety import looks_like_injection
from bot.core.profile import DEFAULT_PROFILE, KBProfile
from bot.core.text import analyze
from bot.core.units import (
    DEADLINE_WORDS_RE,
    DURATION_RE,
    Unit,
    code_terms,
    region_conflict,
    split_units,
    term_overlap,
)
from bot.search.intent import asks_timing, region_hints
from bot.search.retrieval import main_document

log = logging.getLogger(__name__)


@dataclass
class _Candidate:
    source: Source
    unit: Unit
    lex: float
    rank: float  # 1 for the first retrieved source, falling linearly
    sem: float | None = None
    kind_bonus: float = 0.0  # the unit holds the kind of thing asked for
    phrase: float = 0.0  # share of the question's word pairs in the unit or its heading
    novelty: float = 1.0  # idf-weighted share of the unit's words that neither the question nor the title says
    ask: float = 0.0  # idf-weighted share of the asking sentence's terms in the unit (multi-sentence questions)
    self_ref: bool = False  # the unit is about its document ("Use this SOP when...") or mostly a link to another
    regional: bool = False  # the unit or its section names the requester's region
    score: float = 0.0


class ExtractiveComposer(Composer):
    """Pick and cite the source units that answer the question; no model, no network."""

    name = "extractive"

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray] | None, max_units: int = 5,
                 max_steps: int = 12, embed_units: int = 0, max_words_internal: int = 120,
                 max_words_public: int = 90, min_relative: float = 0.72,
                 redundancy: float = 0.6, sem_weight: float = 0.25, lex_weight: float = 0.35,
                 sim_weight: float = 0.4, rank_weight: float = 0.1, type_weight: float = 0.1,
                 length_penalty: float = 0.1, typical_terms: int = 15, same_doc_bonus: float = 0.0,
                 phrase_weight: float = 0.15, case_ratio: float = 0.75,
                 lead_margin: float = 1.15, novelty_weight: float = 0.15, novelty_floor: float = 0.5,
                 ask_weight: float = 0.15, self_ref_weight: float = 0.1, region_weight: float = 0.1,
                 profile: KBProfile = DEFAULT_PROFILE):
        self.embed = embed
        self.profile = profile  # the KB's heading meanings and region names
        self.max_units, self.max_steps = max_units, max_steps
        self.embed_units = embed_units  # embedding every unit costs ~10 ms each on 2 cores: only the best few
        # Word budgets (words of the shown text, citations excluded) outside a procedure's numbered list, which is
        # always kept whole: room for about five units, so a fact one sentence after the best match is kept.
        self.max_words = {"internal": max_words_internal, "public": max_words_public}
        self.min_relative, self.redundancy = min_relative, redundancy
        self.sem_weight, self.lex_weight = sem_weight, lex_weight  # unit-question cosine, idf-weighted overlap
        self.sim_weight, self.rank_weight = sim_weight, rank_weight  # chunk-question cosine, retrieval rank
        self.type_weight = type_weight  # unit holds the kind of answer asked for (duration, amount, queue...)
        self.phrase_weight = phrase_weight  # word pairs keep 'turn on' apart from 'turn off'
        self.length_penalty, self.typical_terms = length_penalty, typical_terms
        self.same_doc_bonus = same_doc_bonus  # later picks from the first pick's document read as one answer
        self.case_ratio = case_ratio  # steps answer a procedural question unless its best unit is this much better
        self.lead_margin = lead_margin  # a unit outside the steps leads them when it beats the best step by this
        # A unit whose words the question (or the document's title) already says restates the situation ("Use
        # this SOP when a user wants to take a break") instead of answering it: it loses up to novelty_weight,
        # in proportion to how far its novelty falls below novelty_floor.
        self.novelty_weight, self.novelty_floor = novelty_weight, novelty_floor
        # A message that describes a situation and then asks ("...veripass matched. can my TL waive the hold?") is
        # answered by the unit matching the ask, not the one restating the situation: up to ask_weight more.
        self.ask_weight = ask_weight
        self.self_ref_weight = self_ref_weight  # "Use this SOP when...", "see <link>": where, not what
        self.region_weight = region_weight  # "If you live in the EU or the UK" for a user in France

    def budget(self, audience: str) -> int:
        """Most words an answer shows outside a numbered procedure, for this audience."""
        return self.max_words.get(audience, self.max_words["public"])

    # scoring ---------------------------------------------------------------------------------------------
    # why: candidate units and their scores in one pass over the sources (each branch a unit kind)
    def candidates(self, request: ComposeRequest, units_by_source: dict[int, list[Unit]]) -> list[_Candidate]:
        """Every unit of every source with its lexical and rank scores, injection-looking text dropped.

        The lexical score is the idf-weighted share of question terms the unit contains (section headings and
        the title count at 0.3), damped for long units so a sentence that says one thing beats a paragraph
        that mentions everything. A list's lead-in ("You can get a refund if both of these are true:") is
        scored with its items, since together they are the statement. Fills units_by_source (all units of
        each source, short ones included) for the list expansion."""
        known_codes = frozenset().union(*(code_terms(s.chunk.text) for s in request.all_sources))
        qw = query_weights(request, known_codes)
        total = sum(qw.values()) or 1.0
        aw = ask_weights(request, known_codes)
        ask_total = sum(aw.values()) or 1.0
        q_phrases = phrases(request.condensed.question)
        out: list[_Candidate] = []
        n = len(request.sources)
        question = request.condensed.question
        # the requester's region (named in the question, else their region filter): a unit about other regions
        # only ("US: 45 days" for a user in Madrid) is never quoted to them
        regions = requester_regions(request, self.profile)
        doc_prior: dict[str, float] = {}
        for rank, src in enumerate(request.sources):
            doc_prior.setdefault(src.chunk.doc_id, 1.0 - rank / max(n, 1))
        for rank, src in enumerate(request.all_sources):
            heading = " ".join((src.chunk.metadata.get("title", ""),) + src.chunk.section_path)
            head_terms = set(analyze(heading))
            head_phrases = phrases(" ".join(src.chunk.section_path))
            known = set(qw) | set(analyze(src.chunk.metadata.get("title", "")))
            # companions and every chunk of the top document share its document's prior (else its Steps chunk
            # weighs less retrieved at rank 6 than offered as a companion, and a how-to loses the procedure)
            top = src.chunk.doc_id == request.sources[0].chunk.doc_id
            rank_prior = 1.0 - rank / max(n, 1) if rank < n and not top else doc_prior.get(src.chunk.doc_id, 0.0)
            # text addressed to the assistant is not policy content, whatever it says: drop its whole paragraph
            units = split_units(src.chunk.text)
            tainted = {u.block for u in units if looks_like_injection(u.display)}
            units = [u for u in units if u.block not in tainted]
            units_by_source[src.number] = units
            # a table or list with a row for the requester's region: its rows naming no region are the other
            # regions' ("US: USD 6.99 label" for a buyer in Ohio, not "Other countries: ...")
            regional = {u.block for u in units if regions and u.kind in ("row", "item")
                        and self.profile.names_regions(u.display) & set(regions)}
            for unit in units:
                if len(unit.display) < 12 or len(unit.terms) < 3:
                    continue
                if regions and unit.kind != "step" and region_conflict(unit.display, regions, self.profile):
                    continue
                if unit.block in regional and unit.kind in ("row", "item") \
                        and not self.profile.names_regions(unit.display):
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
                mass = sum(request.weights.idf(t) for t in unit.terms) or 1.0
                cand.novelty = sum(request.weights.idf(t) for t in unit.terms if t not in known) / mass
                cand.kind_bonus = answer_type_bonus(question, unit.display)
                if aw:
                    cand.ask = sum(v for t, v in aw.items() if t in terms) / ask_total
                cand.self_ref = self_referential(self.profile, unit.display, src.chunk.text[unit.start:unit.end])
                cand.regional = bool(regions) and bool(self.profile.names_regions(
                    f"{' '.join(src.chunk.section_path)} {unit.display}") & set(regions))
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
                       + self.rank_weight * c.rank + self.type_weight * c.kind_bonus + self.phrase_weight * c.phrase
                       - self.novelty_weight * max(0.0, 1.0 - c.novelty / self.novelty_floor)
                       + self.ask_weight * c.ask - self.self_ref_weight * c.self_ref
                       + self.region_weight * c.regional)
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
    def _list_for(self, best: _Candidate, cands: list[_Candidate], kinds: tuple[str, ...],
                  units: dict[int, list[Unit]]) -> list[_Candidate]:
        """The whole list a unit belongs to (with its lead-in), in source order, short items included."""
        known = {c.unit.position: c for c in cands if c.source.number == best.source.number}
        out = [known.get(u.position) or _Candidate(best.source, u, 0.0, best.rank)
               for u in units.get(best.source.number, [])
               if u.list_id == best.unit.list_id and u.kind in kinds]
        return out[: self.max_steps + 1]

    # why: the top-document restriction, the list scores and the ratio test read one candidate list in one pass
    def _best_steps(self, request: ComposeRequest, ranked: list[_Candidate], cands: list[_Candidate],
                    units: dict[int, list[Unit]]) -> list[_Candidate]:
        """For a how-to: the numbered list whose best step scores highest, if it holds up against the best unit;
        a list of the top-ranked document when it has one (another document's list answers another how-to:
        "make your account safer" steps for "how do I turn on 2-step verification")."""
        top = request.sources[0].chunk.doc_id
        if any(c.source.chunk.doc_id == top and c.unit.kind == "step" for c in cands):
            cands = [c for c in cands if c.source.chunk.doc_id == top]
            ranked = [c for c in ranked if c.source.chunk.doc_id == top] or ranked
        lists: dict[tuple[int, int], float] = {}
        for c in cands:  # a "What happens next" list says what follows a procedure: it is none itself
            if (c.unit.kind in ("step", "lead") and c.unit.list_id is not None
                    and not self.profile.section("next", " ".join(c.source.chunk.section_path))):
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

    # why: the procedure layout (lead-in, numbered steps, notes) is one ordered walk
    def _procedure(self, request: ComposeRequest, ranked: list[_Candidate], cands: list[_Candidate],
                   units: dict[int, list[Unit]], main: str) -> list[_Candidate]:
        """The main document's numbered steps, kept together, led (for agents) by the unit that fits the
        question's particular case better than any step; [] when that document has no steps or the question is
        about one case only (its best unit is far better than every step: "how do I route a post made while the
        account was compromised?")."""
        lists: dict[tuple[int, int], float] = {}
        for c in cands:
            if (c.source.chunk.doc_id == main and c.unit.kind == "step" and c.unit.list_id is not None
                    and not self.profile.section("next", " ".join(c.source.chunk.section_path))):
                key = (c.source.number, c.unit.list_id)
                lists[key] = max(lists.get(key, 0.0), c.score)
        if not lists:
            return []
        (number, list_id), best_step = max(lists.items(), key=lambda kv: kv[1])
        # A scope section ("When this applies") restates the situation the agent is describing, so it always
        # fits the question well; it says which procedure applies, not that the question is about one case.
        cases = [c.score for c in ranked if not self.profile.section("scope", " ".join(c.source.chunk.section_path))]
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
            if self.profile.section("scope", " ".join(lead.source.chunk.section_path)):
                continue
            if (lead.source.chunk.doc_id != main or lead.unit.kind not in ("sentence", "item", "row")
                    or (lead.source.number, lead.unit.position) in in_list):
                continue
            if not any(term_overlap(lead.unit, s.unit) > self.redundancy for s in steps):
                return [lead] + steps
        return steps

    # why: two places the next statement can be (same chunk, or a "next" section chunk) and its budget check
    def _after_steps(self, request: ComposeRequest, steps: list[_Candidate], units: dict[int, list[Unit]]
                     ) -> list[_Candidate]:
        """The statement saying what happens after a procedure (the unit right after its list, or the first of a
        retrieved "What happens next" section of that document), when the answer stays within its word budget."""
        last = steps[-1]
        doc = last.source.chunk.doc_id
        following = [u for u in units.get(last.source.number, [])
                     if u.position > last.unit.position and u.list_id != last.unit.list_id]
        pick: tuple[Source, Unit] | None = (last.source, following[0]) if following else None
        if pick is None:
            for src in request.all_sources:
                if (src.chunk.doc_id == doc and src.number != last.source.number and units.get(src.number)
                        and self.profile.section("next", " ".join(src.chunk.section_path))):
                    pick = (src, units[src.number][0])
                    break
        if pick is None or pick[1].kind == "lead" or len(pick[1].terms) < 3:
            return []
        words = sum(len(c.unit.display.split()) for c in steps) + len(pick[1].display.split())
        if words > max(self.budget(request.audience), 0):
            return []
        return [_Candidate(pick[0], pick[1], 0.0, last.rank)]

    # why: the deadline sentence pick is one ordered walk over units with its tie-breaks
    def _deadline(self, request: ComposeRequest, cands: list[_Candidate], chosen: list[_Candidate], main: str
                  ) -> list[_Candidate]:
        """The unit of the main document that states its deadline or SLA best (a duration, deadline words, a
        heading such as "SLA"), when the answer does not state one yet."""
        have = {(c.source.number, c.unit.position) for c in chosen}
        if any(DURATION_RE.search(c.unit.display) and DEADLINE_WORDS_RE.search(c.unit.display) for c in chosen
               if c.unit.kind != "step"):
            return []
        hints = region_hints(request.condensed.question, self.profile)
        scored: list[tuple[float, _Candidate]] = []
        for c in cands:
            if c.source.chunk.doc_id != main or (c.source.number, c.unit.position) in have:
                continue
            if c.unit.kind in ("step", "lead") or not DURATION_RE.search(c.unit.display):
                continue
            if hints and region_conflict(c.unit.display, hints, self.profile):  # "a user in Germany": not the US row's 45 days
                continue
            worded = DEADLINE_WORDS_RE.search(c.unit.display) is not None
            headed = self.profile.section("deadline", " ".join(c.source.chunk.section_path))
            value = c.score + 0.2 * worded + 0.2 * headed
            scored.append((value, c))
        scored.sort(key=lambda x: -x[0])
        picked: list[_Candidate] = []
        for value, c in scored:
            if any(term_overlap(c.unit, o.unit) > self.redundancy for o in chosen + picked):
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
                        and not any(term_overlap(c.unit, o.unit) > self.redundancy for o in said)):
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
        # the document whose procedure answers (for agents the best-ranked SOP among the first three sources),
        # the same one the retriever took companions from
        main = main_document([s.chunk for s in request.sources], request.audience)
        timing = asks_timing(question)
        if is_howto(question):
            steps = (self._procedure(request, ranked, cands, units, main)
                     or self._best_steps(request, ranked, cands, units))
            if steps:
                steps = steps + self._after_steps(request, steps, units)
                steps += self._deadline(request, cands, steps, main) if timing else []
                return steps + self._regional(ranked, steps)
        chosen = self._greedy(request, ranked, cands, units)
        if request.audience != "internal":
            chosen = self._whole_list(request, chosen, cands, units)
        if chosen and not timing and asks_value(question):
            chosen = self._with_value(ranked, chosen)
        if timing and chosen:
            # the deadline of the document the answer is about (its first pick), not of a neighbour
            chosen += self._deadline(request, cands, chosen, chosen[0].source.chunk.doc_id)
        return chosen + self._regional(ranked, chosen)

    def _regional(self, ranked: list[_Candidate], chosen: list[_Candidate]) -> list[_Candidate]:
        """If no pick states the requester's region's rule: the best short unit of a cited document naming it."""
        docs, have = {c.source.chunk.doc_id for c in chosen}, {(c.source.number, c.unit.position) for c in chosen}
        if not chosen or any(c.regional for c in chosen):
            return []
        for c in ranked:
            if (c.regional and c.source.chunk.doc_id in docs and c.unit.kind not in ("lead", "step")
                    and (c.source.number, c.unit.position) not in have and len(c.unit.display.split()) <= 40
                    and not any(term_overlap(c.unit, o.unit) > self.redundancy for o in chosen)):
                return [c]
        return []

    def _whole_list(self, request: ComposeRequest, chosen: list[_Candidate], cands: list[_Candidate],
                    units: dict[int, list[Unit]]) -> list[_Candidate]:
        """For the public, a picked step brings its whole numbered list (a lone "5. Tell someone you trust" out of
        "What to do right now" misleads), after the other picks that fit the word budget with it."""
        step = next((c for c in chosen if c.unit.kind == "step" and c.unit.list_id is not None
                     and not self.profile.section("next", " ".join(c.source.chunk.section_path))), None)
        if step is None:
            return chosen
        steps = self._list_for(step, cands, ("step", "lead"), units)
        if sum(1 for c in steps if c.unit.kind == "step") < 2:
            return chosen
        in_list = {(c.source.number, c.unit.position) for c in steps}
        words = sum(len(c.unit.display.split()) for c in steps)
        kept: list[_Candidate] = []
        for c in chosen:
            if (c.source.number, c.unit.position) in in_list:
                continue
            words += len(c.unit.display.split())
            if words > self.budget(request.audience):
                break
            kept.append(c)
        return kept + steps + self._after_steps(request, steps, units)

    def _with_value(self, ranked: list[_Candidate], chosen: list[_Candidate]) -> list[_Candidate]:
        """When the question asks for a value (an amount, a team, an age) and no chosen unit states one, the best
        unit of a document the answer already cites that does, in place of the weakest pick if the answer is full."""
        if any(c.kind_bonus for c in chosen):
            return chosen
        docs = {c.source.chunk.doc_id for c in chosen}
        have = {(c.source.number, c.unit.position) for c in chosen}
        floor = ranked[0].score * self.min_relative * self.case_ratio
        for c in ranked:
            if c.score < floor:
                break
            if (not c.kind_bonus or c.source.chunk.doc_id not in docs or c.unit.kind == "lead"
                    or (c.source.number, c.unit.position) in have
                    or any(term_overlap(c.unit, o.unit) > self.redundancy for o in chosen)):
                continue
            kept = chosen if len(chosen) < self.max_units else sorted(chosen, key=lambda o: -o.score)[:-1]
            return sorted(kept + [c], key=lambda o: (chosen.index(o) if o in chosen else len(chosen)))
        return chosen

    # why: greedy selection with its stop rules in one loop, so the budget is read in one place
    def _greedy(self, request: ComposeRequest, ranked: list[_Candidate], cands: list[_Candidate],
                units: dict[int, list[Unit]]) -> list[_Candidate]:
        """The best few non-redundant units, grouped by source and in reading order within a source."""
        floor = ranked[0].score * self.min_relative
        pool = [c for c in ranked if c.score >= floor]
        chosen: list[_Candidate] = []
        picked = 0
        length = 0
        budget = self.budget(request.audience)
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
            if any(term_overlap(b.unit, o.unit) > self.redundancy for b in block for o in chosen):
                continue
            size = sum(len(b.unit.display.split()) for b in block)
            if chosen and length + size > budget:
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
