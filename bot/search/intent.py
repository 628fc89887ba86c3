"""What a question asks for, read from its words: a procedure, a timing, a region (hints for ranking and composing)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.core.profile import DEFAULT_PROFILE, KBProfile

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


def region_hints(question: str, profile: KBProfile = DEFAULT_PROFILE) -> tuple[str, ...]:
    """KB region codes of the places a question names ("a user in Munich" -> EU), per the KB profile."""
    return profile.region_hints(question)


def question_intent(question: str, profile: KBProfile = DEFAULT_PROFILE) -> QuestionIntent:
    """Procedure, deadline and region hints of a question, for ranking and composing (never for filtering)."""
    return QuestionIntent(is_procedural(question), asks_timing(question), region_hints(question, profile))

