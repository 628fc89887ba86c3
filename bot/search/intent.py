"""What a question asks for, read from its words: a procedure, a timing, a region (hints for ranking and composing)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PROCEDURAL_RE = re.compile(
    r"\bhow (do|can|should|would|to|does one|are|is)\b(?! (long|much|many|often|soon|old|far|quickly|fast)\b)"
    r"|\bsteps?\b|\bprocedure\b|\bprocess\b|\bwalk me through\b"
    r"|\bwhat (do|should|must|can) (i|we|you|agents?) do\b|\bwhat(?:'s| is) the (next step|process|procedure)\b"
    r"|\bhow (do|should) (i|we) (handle|deal with|process|action)\b",
    re.IGNORECASE,
)
# asks by when something must happen or how long it takes ("when" alone is too loose: "when can a user...")
_TIMING_RE = re.compile(
    r"\bby when\b|\bhow (long|soon|quickly|fast)\b|\bdeadlines?\b|\bhow many (business |calendar |working )?"
    r"(days|hours|weeks|months)\b|\bhow much time\b|\btime ?limits?\b|\bwhen (is|are) (it|this|that|they|the \w+) "
    r"due\b|\bdue (date|by)\b|\bsla\b|\bwithin what\b|\bturnaround\b|\bwhen (do|must|should) (i|we) "
    r"(respond|reply|answer|refund|deliver|finish|complete)\b",
    re.IGNORECASE,
)

# Country and region names -> the KB's region codes (documents carry regions: EU, UK, US, ROW or global).
# 'English' is left out: it names a language far more often than a country.
_EU_NAMES = (
    "austria austrian belgium belgian bulgaria bulgarian croatia croatian cyprus cypriot czechia czech denmark "
    "danish estonia estonian finland finnish france french germany german greece greek hungary hungarian "
    "ireland irish italy italian latvia latvian lithuania lithuanian luxembourg malta maltese netherlands dutch "
    "holland poland polish portugal portuguese romania romanian slovakia slovak slovenia slovenian spain "
    "spanish sweden swedish norway norwegian iceland icelandic liechtenstein eu eea europe european"
)
_UK_NAMES = "uk britain british england scotland scottish wales welsh"
_US_NAMES = "us usa america american california californian texas florida virginia colorado illinois"
_ROW_NAMES = (
    "brazil brazilian mexico mexican canada canadian india indian japan japanese china chinese korea korean "
    "australia australian indonesia indonesian philippines filipino turkey turkish nigeria nigerian "
    "egypt egyptian argentina argentinian switzerland swiss singapore vietnam thailand "
    "pakistan saudi uae emirates russia russian ukraine ukrainian kenya colombia chile"
)
_REGION_WORDS: dict[str, str] = {}
for _names, _region in ((_EU_NAMES, "EU"), (_UK_NAMES, "UK"), (_US_NAMES, "US"), (_ROW_NAMES, "ROW")):
    for _n in _names.split():
        _REGION_WORDS[_n] = _region
# multi-word names are matched as phrases; 'us' only as the capitalised abbreviation (not the pronoun)
_REGION_PHRASE_RE = re.compile(
    r"\b(united kingdom|united states|northern ireland|new york|new zealand|south africa|south korea)\b",
    re.IGNORECASE)
_REGION_PHRASES = {"united kingdom": "UK", "united states": "US", "northern ireland": "UK", "new york": "US",
                   "new zealand": "ROW", "south africa": "ROW", "south korea": "ROW"}
_CASE_SENSITIVE = {"us": "US", "uk": "UK", "eu": "EU", "eea": "EU"}  # must be written in capitals


@dataclass(frozen=True)
class QuestionIntent:
    """What kind of answer a question wants: a procedure, a deadline, and which regions it mentions."""

    procedural: bool = False
    timing: bool = False
    regions: tuple[str, ...] = ()


def is_procedural(question: str) -> bool:
    """Whether a question asks how to do something or what to do (so the procedure's steps answer it)."""
    return bool(_PROCEDURAL_RE.search(question))


def asks_timing(question: str) -> bool:
    """Whether a question asks by when something must happen or how long it takes."""
    return bool(_TIMING_RE.search(question))


def region_hints(question: str) -> tuple[str, ...]:
    """KB region codes of the countries and regions a question names ("a user in Germany" -> EU)."""
    found: list[str] = []
    rest = question
    for m in _REGION_PHRASE_RE.finditer(question):
        found.append(_REGION_PHRASES[m.group(1).lower()])
    rest = _REGION_PHRASE_RE.sub(" ", rest)
    for word in re.findall(r"[A-Za-z]+", rest):
        low = word.lower()
        if low in _CASE_SENSITIVE:
            if word.isupper():
                found.append(_CASE_SENSITIVE[low])
            continue
        region = _REGION_WORDS.get(low)
        if region:
            found.append(region)
    return tuple(dict.fromkeys(found))


def question_intent(question: str) -> QuestionIntent:
    """Procedure, deadline and region hints of a question, for ranking and composing (never for filtering)."""
    return QuestionIntent(is_procedural(question), asks_timing(question), region_hints(question))


def place_words(text: str) -> set[str]:
    """Lower-cased words of text that name a country, city or region (what a follow-up's own place replaces)."""
    words = {m.group(1).lower() for m in _REGION_PHRASE_RE.finditer(text)}
    words = {w for phrase in words for w in phrase.split()}
    for word in re.findall(r"[A-Za-z]+", text):
        low = word.lower()
        if low in _REGION_WORDS or (low in _CASE_SENSITIVE and word.isupper()):
            words.add(low)
    return words
