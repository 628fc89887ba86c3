"""Input guard: length and shape limits on questions and history, PII redaction, and injection detection.

Questions and documents are data, never instructions. The guard rejects input that cannot be handled safely
(empty, oversized, control characters, malformed history) with an InputRejectedError a surface turns into a 4xx,
and redacts personal data before anything is logged or stored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.us import ssn as stdnum_ssn

from bot.core.config import Settings
from bot.core.errors import InputRejectedError

USER_ROLES = frozenset({"user", "human"})
AGENT_ROLES = frozenset({"agent", "assistant", "ai", "bot"})
ALLOWED_ROLES = USER_ROLES | AGENT_ROLES | {"system"}

# C0 controls except tab/newline/carriage return, DEL, and Unicode bidi overrides (used to hide text)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def _clean_text(text: str) -> str:
    """NFC-normalise and strip surrounding whitespace."""
    return unicodedata.normalize("NFC", text).strip()


def validate_question(question: Any, history: Any, settings: Settings) -> tuple[str, list[dict[str, str]]]:
    """Check question and history against the limits in Settings; returns (question, history) normalised.

    History turns come back as {"role": "user"|"agent", "text": ...}; "content" is accepted for "text".
    Raises InputRejectedError with a message the requester can act on.
    """
    if not isinstance(question, str):
        raise InputRejectedError("The question must be a string.")
    if _CONTROL_RE.search(question):
        raise InputRejectedError("The question contains control characters; remove them and ask again.")
    q = _clean_text(question)
    if not q:
        raise InputRejectedError("The question is empty; type a question about a support policy.")
    if len(q) > settings.max_question_chars:
        raise InputRejectedError(
            f"The question is {len(q)} characters long; the limit is {settings.max_question_chars}. "
            "Shorten it to the policy question itself."
        )
    return q, normalise_history(history, settings)


def normalise_history(history: Any, settings: Settings) -> list[dict[str, str]]:
    """Validate a conversation history and return it as [{"role": "user"|"agent", "text": ...}]."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise InputRejectedError("history must be a list of {\"role\": ..., \"text\": ...} objects.")
    if len(history) > settings.max_history_turns:
        raise InputRejectedError(
            f"history has {len(history)} turns; the limit is {settings.max_history_turns}. "
            "Send only the most recent turns."
        )
    out: list[dict[str, str]] = []
    total = 0
    for i, turn in enumerate(history):
        if not isinstance(turn, dict):
            raise InputRejectedError(f"history[{i}] must be an object with 'role' and 'text'.")
        role = str(turn.get("role", "")).lower()
        if role not in ALLOWED_ROLES:
            raise InputRejectedError(f"history[{i}].role must be 'user' or 'agent', not {turn.get('role')!r}.")
        text = turn.get("text", turn.get("content"))
        if not isinstance(text, str):
            raise InputRejectedError(f"history[{i}] needs a 'text' string.")
        if _CONTROL_RE.search(text):
            raise InputRejectedError(f"history[{i}] contains control characters.")
        text = _clean_text(text)
        total += len(text)
        if total > settings.max_history_chars:
            raise InputRejectedError(
                f"history is longer than {settings.max_history_chars} characters; send fewer or shorter turns."
            )
        if role == "system":  # a caller cannot inject system turns: history is conversation data only
            raise InputRejectedError(f"history[{i}] has role 'system'; only 'user' and 'agent' turns are accepted.")
        out.append({"role": "user" if role in USER_ROLES else "agent", "text": text})
    return out


def trim_history(history: Sequence[dict[str, str]] | None, settings: Settings) -> list[dict[str, str]]:
    """The most recent turns that fit the history limits (for surfaces that keep a long transcript)."""
    out: list[dict[str, str]] = []
    total = 0
    for turn in reversed(list(history or [])[-settings.max_history_turns:]):
        text = turn.get("text") or turn.get("content") or ""
        if total + len(text) > settings.max_history_chars:
            break
        out.insert(0, turn)
        total += len(text)
    return out


# ---- PII redaction -------------------------------------------------------------------------------------

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# "jane.doe (at) example (dot) com", "jane [at] example.com": the at must be bracketed or the dot spelled out, so
# "meet at home" stays as written
_AT = r"(?:\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+)"
_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\.)"
_OBFUSCATED_EMAIL_RE = re.compile(rf"\b[\w.+\-]+{_AT}[\w\-]+(?:{_DOT}[\w\-]+)+\b", re.IGNORECASE)
# Candidates only: every IBAN, card and SSN candidate is confirmed by python-stdnum's checksum rules below.
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b", re.IGNORECASE)
_CARD_RE = re.compile(r"(?<![\d.-])(?:\d[ .-]?){12,18}\d(?![\d-]|\.\d)")
# What people type next to a card: its security code and expiry. Within this many characters after [CARD],
# a MM/YY date and a lone 3-4 digit number are the card's too.
_CARD_TAIL_CHARS = 40
_CVV_RE = re.compile(r"\b(?:cvv2?|cvc2?|csc|cid|security code)\W{0,3}\d{3,4}\b", re.IGNORECASE)
_EXPIRY_RE = re.compile(r"\b(?:0[1-9]|1[0-2])\s?/\s?(?:\d{2}|20\d{2})\b")
_CVV_NEAR_RE = re.compile(r"(?<![\d/.,-])\b\d{3,4}\b(?![/.,]\d)")
_SSN_RE = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_BARE_SSN_RE = re.compile(r"(?<![\w.,/-])\d{9}(?![\w-]|[.,/]\d)")
_NINO_RE = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_IPV4_RE = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6_RE = re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}\b")
# Phone numbers are found by Google's libphonenumber (phonenumbers): numbers valid in the numbering plan of any
# of these countries, written nationally ("030/12345678") or internationally. They are where the KB's regions
# (EU, UK, US) have most users; an international "+CC" number is recognised whatever the country.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "IE")
_PHONE_CANDIDATE_RE = re.compile(r"\+?\(?\d[\d ()./\-]{5,24}\d")
# Numbers shaped like a phone number that no plan validates (e.g. the fictional "(555) 123-4567"): 7-15 digits
# with the usual separators; dates are excluded below.
_PHONE_RE = re.compile(r"(?<![\w+\-/])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]?\d{2,4}){1,4}(?!\w)")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum used by payment cards (python-stdnum)."""
    return stdnum_luhn.is_valid(digits)


def iban_ok(candidate: str) -> bool:
    """Whether a string is a valid IBAN: country format and ISO 13616 mod-97 check (python-stdnum)."""
    return stdnum_iban.is_valid(candidate)


def redact_pii(text: str) -> str:
    """Replace emails, phone numbers, payment cards (with their CVV and expiry), IBANs, IP addresses and
    national ids with tags. Street addresses are not recognised (docs/privacy.md)."""
    if not text:
        return text
    text = _EMAIL_RE.sub("[EMAIL]", text)
    text = _OBFUSCATED_EMAIL_RE.sub(_obfuscated_email, text)
    text = _IBAN_RE.sub(lambda m: "[IBAN]" if iban_ok(m.group()) else m.group(), text)
    text = _CARD_RE.sub(_card, text)
    text = _card_tails(text)
    text = _SSN_RE.sub("[NATIONAL_ID]", text)
    text = _BARE_SSN_RE.sub(lambda m: "[NATIONAL_ID]" if stdnum_ssn.is_valid(m.group()) else m.group(), text)
    text = _NINO_RE.sub("[NATIONAL_ID]", text)
    text = _IPV4_RE.sub("[IP]", text)
    text = _IPV6_RE.sub(lambda m: "[IP]" if m.group().count(":") >= 2 else m.group(), text)
    text = _redact_phones(text)
    return _PHONE_RE.sub(_phone_shaped, text)


def _obfuscated_email(m: re.Match) -> str:
    s = m.group()
    spelled = re.search(r"[(\[{<]\s*at\s*[)\]}>]", s, re.IGNORECASE) or re.search(r"\bdot\b", s, re.IGNORECASE)
    return "[EMAIL]" if spelled else s


def _card(m: re.Match) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group()


def _card_tails(text: str) -> str:
    """Security codes anywhere, and the expiry and code typed right after a redacted card."""
    text = _CVV_RE.sub("[CARD_CVV]", text)
    out: list[str] = []
    pos = 0
    for m in re.finditer(re.escape("[CARD]"), text):
        tail_end = min(len(text), m.end() + _CARD_TAIL_CHARS)
        out.append(text[pos:m.end()])
        tail = _EXPIRY_RE.sub("[CARD_EXPIRY]", text[m.end():tail_end])
        out.append(_CVV_NEAR_RE.sub("[CARD_CVV]", tail))
        pos = tail_end
    out.append(text[pos:])
    return "".join(out)


def _redact_phones(text: str) -> str:
    # libphonenumber's matcher costs about 0.3 ms per region on a whole answer; run on digit runs only (the
    # candidates), it costs about as much as the regexes around it.
    out: list[str] = []
    pos = 0
    for cand in _PHONE_CANDIDATE_RE.finditer(text):
        chunk = cand.group()
        if sum(ch.isdigit() for ch in chunk) < 7:  # no numbering plan has shorter numbers
            continue
        spans = {(m.start, m.end) for region in PHONE_REGIONS
                 for m in phonenumbers.PhoneNumberMatcher(chunk, region, leniency=phonenumbers.Leniency.VALID)}
        for start, end in _outermost(spans):
            out.append(text[pos:cand.start() + start])
            out.append("[PHONE]")
            pos = cand.start() + end
    out.append(text[pos:])
    return "".join(out)


def _outermost(spans: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Non-overlapping spans, longest first where two overlap, in text order."""
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not kept or start >= kept[-1][1]:
            kept.append((start, end))
    return kept


def _phone_shaped(m: re.Match) -> str:
    s = m.group()
    digits = re.sub(r"\D", "", s)
    if not 7 <= len(digits) <= 15 or _DATE_RE.match(s.strip()):
        return s
    if not re.search(r"[\s.\-()+]", s) and not s.startswith("+") and len(digits) < 10:
        return s  # a bare short number (an amount, an order count) is not a phone number
    return "[PHONE]"


def redact_history(history: Sequence[dict[str, str]] | None) -> list[dict[str, str]]:
    """A copy of the history with PII redacted in every turn."""
    return [{**t, "text": redact_pii(t.get("text") or t.get("content") or "")} for t in history or []]


# ---- prompt-injection detection ------------------------------------------------------------------------

_INJECTION_RE = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|system)\b"
    r"[^.\n]{0,20}\b(instructions?|prompts?|rules?|messages?)\b"
    r"|\bsystem (note|prompt|message|instruction)s?\b"
    r"|\byou are now\b|\bact as (an? )?(unrestricted|different)\b"
    r"|\breveal (the |your )?(system prompt|internal|hidden)\b"
    r"|\bnew instructions?\s*:",
    re.IGNORECASE,
)


def looks_like_injection(text: str) -> bool:
    """Whether text reads like an instruction aimed at the assistant rather than policy content."""
    return bool(_INJECTION_RE.search(text))


# ---- crisis messages -----------------------------------------------------------------------------------

# Words of someone at risk rarely share vocabulary with the safety articles that answer them ("I don't want to be
# alive anymore" vs "thoughts of suicide or self-harm"), so such messages are searched with the crisis vocabulary
# added and are never refused for low confidence.
_CRISIS_RE = re.compile(
    r"\bsuicid|\bkill(?:ing)?\s+(?:my|him|her|them)sel(?:f|ves)\b|\bend(?:ing)?\s+(?:my|his|her|their)\s+life\b"
    r"|\bend\s+it\s+all\b|\bwants?\s+to\s+die\b|\bwanted\s+to\s+die\b"
    r"|\b(?:don'?t|do\s+not|doesn'?t|does\s+not|no\s+longer)\s+want\s+to\s+(?:live|be\s+alive|be\s+here|exist)\b"
    r"|\bself[-\s]?harm|\b(?:hurt|harm|cut)(?:ing|s)?\s+(?:my|him|her|them)sel(?:f|ves)\b"
    r"|\bbetter\s+off\s+dead\b|\bno\s+reason\s+to\s+live\b|\boverdos(?:e|ing)\b"
    r"|\b(?:i\s+am|i'm|we\s+are|we're|they\s+are|they're|he\s+is|he's|she\s+is|she's|someone\s+is)\s+in\s+danger\b"
    r"|\bin\s+immediate\s+danger\b|\blife\s+is\s+at\s+risk\b",
    re.IGNORECASE,
)
CRISIS_QUERY = "thoughts of suicide or self-harm, immediate danger, emergency services, crisis helpline"


# a request for a person, in plain English: a verb of contact near a word for a person, or such a word alone
_PERSON_RE = re.compile(
    r"\b(talk|speak|chat|connect|transfer|put) (me )?(to|with|through to)( an?| the| some| your)? ?"
    r"(real |live |actual )?(human|person|agent|someone|somebody|representative|operator|staff|support team)\b|"
    r"^\W*(an? )?(real |live )?(human|person|agent|representative|operator)( please)?\W*$", re.IGNORECASE)


def asks_for_person(text: str) -> bool:
    """True when the message asks to be put through to a person rather than asking a policy question."""
    return bool(_PERSON_RE.search(text or ""))


def crisis_signal(text: str) -> bool:
    """Whether a message says someone may be at risk of harming themselves or is in immediate danger (the
    phrase check; CrisisDetector adds the semantic one)."""
    return bool(_CRISIS_RE.search(text or ""))


# What the KB's crisis SOP says makes a case (sop-self-harm-imminent-danger, "When this applies": a user telling us
# they want to die, a goodbye post, a stated plan, access to means, a timeframe such as "tonight" or "after this
# stream", an attempt in progress, action already taken), said the way a person or a reporter says it. A clause
# close in meaning to one of them is a crisis whatever its words ("gonna end it after this stream").
CRISIS_DESCRIPTIONS = (
    "I want to die",
    "they want to kill themselves",
    "this is goodbye, I won't be here tomorrow",
    "she has a plan to end her life tonight",
    "he has pills or a weapon to hurt himself with",
    "he is going to hurt himself after this stream",
    "someone is attempting suicide right now",
    "they have already taken an overdose",
)
# Cosine (MiniLM) at or above which a clause reads as one of the descriptions. Fitted by benchmarks/crisis_fit.py
# on the fit halves of kb_agent, kb_public and kb_typed: the lowest value above every case whose gold documents
# are not crisis documents (a false crisis is never refused and searches with the crisis vocabulary), then
# reported on the check halves and ../shared/eval-dev (docs/quality.md).
CRISIS_SIMILARITY = 0.51
_CLAUSE_RE = re.compile(r"[.;!?\n]+|,\s+|\s+[-–—]\s+")


def clauses(text: str) -> list[str]:
    """The clauses of a message of three words or more (a long message dilutes one alarming clause)."""
    parts = [p.strip() for p in _CLAUSE_RE.split(text or "") if len(p.split()) >= 3]
    return parts or ([text.strip()] if text and text.strip() else [])


class CrisisDetector:
    """Whether a turn, or the recent user turns it follows up, says someone may be at risk: the phrase check,
    backed by embedding similarity of each clause to CRISIS_DESCRIPTIONS (paraphrases the phrases miss)."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], threshold: float = CRISIS_SIMILARITY,
                 descriptions: Sequence[str] = CRISIS_DESCRIPTIONS):
        self._embed = embed
        self.threshold = threshold
        self._descriptions = tuple(descriptions)
        self._vectors: np.ndarray | None = None

    def similarity(self, texts: Sequence[str], prefetch: Sequence[str] = ()) -> float:
        """The highest cosine of any clause of texts to a crisis description (0 for no text). `prefetch` texts
        are embedded in the same call and not scored: with a memoising embedder the search that embeds them next
        finds them ready (one model call per question instead of two: ~25 ms each on a loaded 2-core machine)."""
        parts = [c for t in texts for c in clauses(t)]
        if not parts or not self._descriptions:
            return 0.0
        if self._vectors is None:
            self._vectors = np.asarray(self._embed(list(self._descriptions)), dtype=np.float32)
        vectors = np.asarray(self._embed([*parts, *prefetch]), dtype=np.float32)[: len(parts)]
        return float((vectors @ self._vectors.T).max())

    def check(self, question: str, history: Sequence[dict[str, str]] = (), turns: int = 2,
              prefetch: Sequence[str] = ()) -> bool:
        """True when the question or one of the last `turns` user turns of history is a crisis (pass the history
        only for a follow-up: a new question is read alone)."""
        recent = [t.get("text") or t.get("content") or "" for t in history if t.get("role") in USER_ROLES]
        texts = [question, *recent[-turns:]] if turns else [question]
        return any(crisis_signal(t) for t in texts) or self.similarity(texts, prefetch) >= self.threshold
