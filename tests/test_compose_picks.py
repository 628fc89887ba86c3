"""The extractive composer states the fact: the asked-for unit over scope lines, codes as one term, the
requester's region row only, a procedure's whole list with what happens next, word budgets, clean text."""

from __future__ import annotations

from collections import Counter

from bot.answer.compose import ComposeRequest, Source, answer_type_bonus, ask_part
from bot.answer.condense import DeterministicCondenser
from bot.answer.extractive import ExtractiveComposer
from bot.core.config import PROJECT_ROOT
from bot.core.models import Chunk
from bot.core.profile import DEFAULT_PROFILE, load_profile
from bot.core.text import TermWeights, analyze
from bot.core.units import clean_display, code_terms, named_codes, split_units

KB_PROFILE = load_profile(PROJECT_ROOT / "kb" / "policydesk-profile.toml")


def chunk(doc_id: str, text: str, section: str = "", title: str = "", n: int = 0) -> Chunk:
    """A chunk as ingest makes it (body, section path, title in the metadata)."""
    return Chunk(f"{doc_id}#{n}", doc_id, n, text, (section,) if section else (), len(text.split()),
                 {"title": title or doc_id})


def compose(question: str, chunks: list[Chunk], audience: str = "internal", profile=DEFAULT_PROFILE,
            regions: tuple[str, ...] = (), history: list[dict] | None = None, **kw) -> list[str]:
    """The shown sentences of the extractive answer over chunks ranked as given (idf from these chunks)."""
    df = Counter(t for c in chunks for t in set(analyze(c.embed_text)))
    cond = DeterministicCondenser(profile=profile).run(question, history or [])
    sources = [Source(i + 1, c, 0.5, 0.5) for i, c in enumerate(chunks)]
    request = ComposeRequest(question, cond, sources, audience, weights=TermWeights(dict(df), len(chunks) + 5),
                             regions=regions)
    draft = ExtractiveComposer(None, profile=profile, **kw).run(request)
    return [s.text for s in draft.sentences]


def test_the_asking_sentence_decides_over_a_scope_line_that_restates_the_situation():
    sop = chunk("sop-reset", "Use this SOP when a user lost their phone and all their backup codes and cannot log in. "
                "No one in Support can waive the 72-hour hold, including team leads. "
                "Log the request in the ticket.", "When this applies", "Two-step reset")
    out = compose("user lost her phone and all the backup codes and cannot log in. can my lead waive the hold?",
                  [sop], max_units=1)
    assert out == ["No one in Support can waive the 72-hour hold, including team leads."]


def test_a_yes_no_question_is_recognised_where_its_clause_starts():
    q = "cust lost her phone, veripass matched. can my TL waive the hold just this once??"
    assert answer_type_bonus(q, "No one in Support can shorten or waive the hold.") == 1.0
    assert ask_part(q) == "can my TL waive the hold just this once??"
    assert ask_part("payout on hold. she wants to know why. what do i tell her") == "what do i tell her"
    assert ask_part("how long is the window?") == "how long is the window?"


def test_a_code_is_one_term_so_the_exact_code_outranks_its_siblings():
    assert code_terms("For HOLD-RISK or RF-UNAUTH-PSD2, not ON_HOLD-ish follow-up") == {"hold-risk", "rf-unauth-psd2"}
    assert named_codes("code hold-risk on the payout", frozenset({"hold-risk", "hold-age"})) == {"hold-risk"}
    steps = chunk("sop-hold", "1. For HOLD-AGE, tell the creator payouts need an age check.\n"
                  "2. For HOLD-RISK, tell the creator the payout is in routine review.\n"
                  "3. For HOLD-ENF, tell the creator payouts are paused.", "Hold codes", "Payout holds")
    out = compose("creator payout has code HOLD-RISK, what do i tell the creator about it", [steps], max_units=1)
    assert out == ["For HOLD-RISK, tell the creator the payout is in routine review."]


def test_the_requesters_region_row_is_quoted_and_no_other_regions_row():
    table = chunk("help-returns", "| Where you live | Label |\n|---|---|\n"
                  "| US | We provide a prepaid label; USD 6.99 is taken from your refund. |\n"
                  "| Other countries | Send the item back with a tracked service at your own cost. |",
                  "Sending the item back", "Returns")
    out = compose("buyer in ohio wants to send the item back, who pays the label?", [table], profile=KB_PROFILE)
    assert out == ["US: We provide a prepaid label; USD 6.99 is taken from your refund."]
    out = compose("buyer wants to send the item back, who pays the label?", [table], profile=KB_PROFILE)
    assert len(out) == 2  # no region known: both rows


def test_a_procedure_keeps_its_whole_list_and_what_happens_next_within_the_budget():
    how = chunk("help-delete", "1. Go to Settings > Account > Delete.\n2. Tap Delete account.\n"
                "3. Enter your password.\n4. Tap Delete account to confirm.", "Delete your account", "Delete")
    nxt = chunk("help-delete", "Your account is deactivated for 30 days, then deleted for good.\n\n"
                "Log in within 30 days to cancel.", "What happens next", "Delete", n=1)
    out = compose("how do i delete my account", [how, nxt], audience="public")
    assert out[:4] == ["Go to Settings > Account > Delete.", "Tap Delete account.", "Enter your password.",
                       "Tap Delete account to confirm."]
    assert out[4:] == ["Your account is deactivated for 30 days, then deleted for good."]
    # over the word budget the list stays whole and the next statement is left out
    assert compose("how do i delete my account", [how, nxt], audience="public", max_words_public=15) == out[:4]


def test_the_how_to_fallback_stays_in_the_top_ranked_document():
    top = chunk("help-2fa", "1. Go to Settings > Security > Two-factor authentication.\n2. Choose how to receive "
                "codes.\n3. Save your backup codes.", "Turn on 2FA", "Two-factor authentication")
    other = chunk("help-safety", "1. Turn on two step verification to protect your account.\n2. Block accounts "
                  "you don't want to hear from.", "Make your account safer", "Safety center")
    out = compose("how do i turn on two step verification", [top, other], audience="public")
    assert out[0] == "Go to Settings > Security > Two-factor authentication."
    assert not any("Block accounts" in s for s in out)


def test_word_budget_per_audience_limits_loose_sentences():
    facts = ["Web coins are refundable within fourteen days of the purchase date shown on the receipt.",
             "Unused web coins go back to the card that paid for them, never elsewhere.",
             "Refundable web coins must still sit unspent in the wallet when support checks.",
             "Banks usually post refunds for web coins between five and ten business days later.",
             "Agents flag a fifth refundable web coins request in one month for fraud review.",
             "Gifted web coins belong to the receiver and the sender loses any refund claim.",
             "Partial refunds of web coins follow first in first out spending order rules.",
             "Declined web coins refunds get the standard macro with the reason spelled out."]
    text = " ".join(facts)
    c = chunk("help-refunds", text, "Who can get a refund", "Refunds")
    internal = compose("are web coins refundable", [c], min_relative=0.0)
    public = compose("are web coins refundable", [c], audience="public", min_relative=0.0)
    assert len(internal) == 5  # five units of 13 words fit 120 words; the unit cap stops it
    assert len(public) == 5 and sum(len(s.split()) for s in public) <= 90
    assert len(compose("are web coins refundable", [c], audience="public", min_relative=0.0,
                       max_words_public=30)) == 2


def test_self_reference_and_link_only_units_rank_below_units_that_add_information():
    c = chunk("help-refunds", "This article is for coins you bought on the web and want refunded. "
              "Coins bought on the web are refunded within 14 days of purchase if unused.",
              "", "Refunds for web coins")
    assert compose("i bought coins on the web and want them refunded", [c], max_units=1) == [
        "Coins bought on the web are refunded within 14 days of purchase if unused."]
    units = split_units("See [Refunds for app store coins](kb:help-app-store). Refunds take 5 days.")
    assert [u.display for u in units] == ["See Refunds for app store coins.", "Refunds take 5 days."]


def test_clean_display_drops_a_bold_marker_a_sentence_split_left_alone():
    assert clean_display("**If you feel unsafe, call a crisis line now.") == "If you feel unsafe, call a crisis line now."
    assert clean_display("Tap **Request a refund** and confirm.") == "Tap Request a refund and confirm."


def test_a_public_answer_that_picks_one_step_shows_its_whole_list():
    intro = chunk("help-threats", "If someone threatens to share your photos unless you pay, this is called "
                  "sextortion. It is a crime and not your fault.", "", "Threats to share photos")
    steps = chunk("help-threats", "1. Don't pay and don't send anything more.\n2. Stop replying, but keep the "
                  "conversation.\n3. Report the account and block it.\n4. Tell someone you trust about the threats.",
                  "What to do right now", "Threats to share photos", n=1)
    out = compose("someone threatens to share my photos, should i stop replying to them?", [intro, steps],
                  audience="public")
    assert out[-4:] == ["Don't pay and don't send anything more.", "Stop replying, but keep the conversation.",
                        "Report the account and block it.", "Tell someone you trust about the threats."]
    assert len(out) <= 6  # the list whole, plus the picks that fit the budget with it


def test_a_section_for_the_requesters_region_outranks_the_general_one():
    general = chunk("help-charge", "Tell us about a charge you did not make as soon as you can, and we check "
                    "the payment before any refund.", "Report a charge", "Charges you don't recognise")
    eu = chunk("help-charge", "We refund a charge you did not make by the end of the next business day after "
               "you tell us.", "If you live in the EU/EEA or the UK", "Charges you don't recognise", n=1)
    out = compose("i'm in france and there's a charge i did not make, do i get a refund?", [general, eu],
                  audience="public", profile=KB_PROFILE, max_units=1)
    assert out == ["We refund a charge you did not make by the end of the next business day after you tell us."]


def test_a_question_about_a_limit_wants_a_number():
    assert answer_type_bonus("creator asking what the min withdrawal is", "The minimum withdrawal is USD 50.") == 1.0
    assert answer_type_bonus("creator asking what the min withdrawal is", "Withdrawals are paid monthly.") == 0.0


def test_one_duration_pattern_serves_retrieval_the_composer_and_the_assessment():
    from bot.core.units import DURATION_RE, STATED_TIME_RE

    for text in ("within one month", "5-10 business days", "two further months", "an hour", "twelve months",
                 "by the end of the next business day"):
        assert DURATION_RE.search(text) and STATED_TIME_RE.search(text), text
    for text in ("immediately", "there is no time limit"):
        assert STATED_TIME_RE.search(text) and not DURATION_RE.search(text), text
    assert answer_type_bonus("how long does it take?", "It takes twelve months.") == 1.0


def test_a_follow_up_keeps_the_region_its_conversation_named():
    table = chunk("sop-returns", "| Region | Window |\n|---|---|\n| EU | Returns within 14 days of delivery, "
                  "then decline. |\n| US | Buyers may send items back up to 30 days after delivery. |",
                  "Return windows", "Returns")
    history = [{"role": "user", "text": "buyer in vienna wants to return a pair of shoes"},
               {"role": "assistant", "text": "Returns are accepted within the window."}]
    out = compose("and if it has been 16 days since delivery?", [table], profile=KB_PROFILE, history=history)
    assert out == ["EU: Returns within 14 days of delivery, then decline."]


def test_an_abbreviation_after_an_opening_bracket_does_not_end_the_sentence():
    units = split_units("Erase data collected from a child (Art. 8(1) GDPR) on request. Then tell the user.")
    assert [u.display for u in units] == ["Erase data collected from a child (Art. 8(1) GDPR) on request.",
                                          "Then tell the user."]


def test_an_answer_without_the_requesters_regional_rule_gets_it_from_a_cited_document():
    how = chunk("help-charge", "1. Go to Contact us and choose I don't recognise a charge.\n2. Tell us the date and "
                "the amount of the charge.", "How to report a charge", "Charges you don't recognise")
    eu = chunk("help-charge", "We refund it by the end of the next business day after you tell us.",
               "If you live in the EU/EEA or the UK", "Charges you don't recognise", n=1)
    out = compose("how do i report a charge i don't recognise? i'm in france", [how, eu], audience="public",
                  profile=KB_PROFILE)
    assert out[-1] == "We refund it by the end of the next business day after you tell us."
    out = compose("how do i report a charge i don't recognise?", [how, eu], audience="public", profile=KB_PROFILE)
    assert "We refund it by the end of the next business day after you tell us." not in out
