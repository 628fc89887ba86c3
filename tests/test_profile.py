"""KB conventions as data: kb/'s profile file, the defaults for a KB that follows none of it, bad profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.answer.escalation import find_escalation, queue_table
from bot.core.config import Settings
from bot.core.profile import PROFILE_FILE, KBProfile, ProfileError, load_profile, parse_profile
from bot.core.units import region_conflict

ROOT = Path(__file__).resolve().parent.parent
KB = load_profile(ROOT / "kb" / PROFILE_FILE)


def test_places_come_from_the_gazetteer_and_regions_from_the_profile():
    assert KB.region_hints("cust in berlin wants a copy of his data") == ("EU",)
    assert KB.region_hints("buyer in Denver and a parent in texas") == ("US",)
    assert KB.region_hints("a creator in Lagos, Nigeria") == ("ROW",)  # no list names it: the default region
    assert KB.region_hints("a French PSD2 case") == ("EU",)  # a demonym from the profile's aliases
    assert KB.region_hints("can you tell us more") == ()  # "us" the pronoun is no place
    assert KB.place_words("and what if they are in the United States?") == {"united", "states"}


def test_lower_case_region_words_count_where_a_country_stands():
    assert KB.region_hints("uk cust lost her wallet") == ("UK",)  # "uk" and "eu" are no English words
    assert KB.region_hints("eu buyer returning a dress") == ("EU",)
    assert KB.region_hints("and if he was in the us?") == ("US",)  # after "the"
    assert KB.region_hints("us cust wants a refund") == ("US",)  # opening the message
    assert KB.region_hints("is she a us customer") == ("US",)  # after "a"
    for pronoun in ("email us the receipt", "let us know", "they told us it was fine"):
        assert KB.region_hints(pronoun) == (), pronoun
    assert KB.region_hints("acct in são paulo asked for a copy") == ("ROW",)  # letters of any script


def test_a_kb_without_a_profile_gets_defaults_that_assume_nothing(tmp_path):
    settings = Settings(kb_dir=tmp_path, data_dir=tmp_path / "data")
    profile = settings.profile
    assert profile.source == "defaults" and profile.region_codes == ()
    assert profile.region_hints("a user in Germany") == ()  # no region codes: no hints, no conflicts
    assert not region_conflict("US: 45 calendar days", ("EU",), profile)
    assert profile.place_words("a user in Germany") == {"germany"}  # places are still recognised
    assert profile.priority is None and profile.queue is None
    assert profile.section("deadline", "Response times") and profile.section("scope", "Overview")
    link = profile.link.search("see [Refunds](refunds.md)")
    assert link and link.group(1) == "Refunds" and link.group(2) == "refunds.md"


def test_kb_profile_is_found_in_the_kb_folder_and_overrides_defaults():
    settings = Settings(kb_dir=ROOT / "kb")
    assert settings.profile == KB and KB.region_codes == ("EU", "UK", "US", "ROW")
    assert KB.priority.search("route at P2").group(1) == "2"
    assert KB.link.search("follow [Unauthorised payments](kb:sop-unauthorised-payments-psd2)").group(2) == \
        "sop-unauthorised-payments-psd2"
    assert KB.section("scope", "Before you start") and not KBProfile().section("scope", "Before you start")


def test_no_queue_syntax_means_no_escalation_line(kb_index):
    gen = kb_index.require_generation()
    docs = ["sop-account-hacked"]
    assert find_escalation(gen, docs, "hacked account", queue_table(gen, KB), profile=KB) is not None
    plain = KBProfile()
    assert queue_table(gen, plain) == {} and find_escalation(gen, docs, "hacked account", {}, profile=plain) is None


def test_a_broken_profile_names_the_file_and_the_pattern(tmp_path):
    bad = tmp_path / PROFILE_FILE
    bad.write_text('[patterns]\npriority = "P([1-4"\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="patterns.priority"):
        load_profile(bad)
    (tmp_path / "x.toml").write_text("[regions\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "x.toml")
    assert parse_profile({}).region_codes == ()
