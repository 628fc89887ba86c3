"""Answers show clean text (issue 11 item 5): converter and Markdown residue is removed from what is shown, the
citation keeps the exact source span, and escalations read team · queue · priority with the reason in words."""

from __future__ import annotations

import pytest

from bot.core.units import clean_display, split_units
from bot.surfaces.console import escalation_text


@pytest.mark.parametrize("raw, shown", [
    ("Read the letter or order see a sample [1] carefully.", "Read the letter or order see a sample carefully."),
    ("Make a Reservation [4 ] If you don t want to transfer it , ask.",
     "Make a Reservation If you don't want to transfer it, ask."),
    ("Route the ticket to `fraud-review` as P3.", "Route the ticket to fraud-review as P3."),
    ("Return to Saved Application|Check Application Status|Replace Card",
     "Return to Saved Application; Check Application Status; Replace Card"),
    ("with three statuses. * obsolete: The image is not available.",
     "with three statuses. obsolete: The image is not available."),
    ("See [Hacked account recovery](kb:sop-account-hacked) and **never** share it.",
     "See Hacked account recovery and never share it."),
    ("A [Note] in brackets stays, and so does 3.5 % or a time: 10:30.",
     "A [Note] in brackets stays, and so does 3.5 % or a time: 10:30."),
])
def test_clean_display_removes_residue_and_keeps_content(raw, shown):
    assert clean_display(raw) == shown


def test_units_show_clean_text_but_quote_the_exact_source_span():
    text = "However , you don t need a new licence [2 ] if you moved here.\n"
    (unit,) = split_units(text)
    assert unit.display == "However, you don't need a new licence if you moved here."
    assert text[unit.start:unit.end].startswith("However , you don t need")  # the citation's quote is verbatim


def test_escalation_reads_team_queue_priority_and_the_reason(kb_settings, kb_index):
    from bot.answer.service import AnswerService
    from bot.core.models import Audience, Filters

    a = AnswerService(kb_settings, kb_index).ask(
        "A creator said on LIVE they want to end their life. What do I do?", [], Filters(Audience.INTERNAL))
    line = escalation_text(a.escalation)
    assert line.startswith("Suggested escalation: ") and " · priority P1" in line
    assert "`" not in line and "](" not in line and a.escalation.reason


@pytest.mark.parametrize("regions", [("EU",), ("US",), ("UK",)])
def test_an_answer_never_quotes_only_another_regions_rule(kb_settings, kb_index, regions):
    """The requester's region (their filter, or a country the question names) gets its own rows, never a line
    that is about other regions only (before: an EU agent got the US-only 'full answer to a formal request')."""
    from bot.answer.service import AnswerService
    from bot.core.models import Audience, Filters
    from bot.core.units import region_conflict

    svc = AnswerService(kb_settings, kb_index)
    assert region_conflict("For US and ROW users only.", ("EU",), svc.profile)  # kb/'s profile names regions
    a = svc.ask("How long do we have to reply to a request for a copy of a user's data?", [],
                Filters(Audience.INTERNAL, regions=regions))
    assert not a.refused and a.citations
    assert [line for line in a.text.split("\n") if region_conflict(line, regions, svc.profile)] == []
