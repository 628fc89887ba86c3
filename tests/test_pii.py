"""PII the red-team run found stored unredacted (issue 12, item 5), and the store file's permissions."""

from __future__ import annotations

import stat

import pytest

from bot.answer.safety import redact_pii
from bot.store.sqlite import Store


@pytest.mark.parametrize("text, tag, secrets", [
    ("ruf mich an: 030/12345678", "[PHONE]", ("12345678",)),
    ("my mobile is 0171 1234567", "[PHONE]", ("1234567",)),
    ("card 4111.1111.1111.1111 was charged", "[CARD]", ("4111", "1111.1111")),
    ("iban de89 3704 0044 0532 0130 00 please", "[IBAN]", ("3704", "0532")),
    ("my ssn is 123456789", "[NATIONAL_ID]", ("123456789",)),
    ("write to jane.doe (at) example (dot) com", "[EMAIL]", ("jane.doe", "example")),
    ("write to jane.doe [at] example.com", "[EMAIL]", ("jane.doe",)),
    ("card 4111 1111 1111 1111 exp 09/27 cvv 123", "[CARD]", ("09/27", "123")),
    ("4111-1111-1111-1111, 12/2029, 4821", "[CARD]", ("12/2029", "4821")),
    ("the code on the back (CVC: 987) is worn", "[CARD_CVV]", ("987",)),
])
def test_pii_forms_the_red_team_found_are_redacted(text, tag, secrets):
    out = redact_pii(text)
    assert tag in out, out
    for secret in secrets:
        assert secret not in out, out


@pytest.mark.parametrize("text", [
    "Refunds take 5-10 business days.",
    "Order CP-1234567890 over USD 200 goes to fraud-review as P3.",
    "Version 2.0 replaced 1.3 on 01/07/2026.",
    "We meet at home at 10 and look at the order.",
    "Escalate within 24 hours; 3 strikes lead to a 7 day ban.",
    "Coins bought after 2026-01-01 cost USD 1.99 per 100.",
])
def test_policy_text_is_still_not_mangled(text):
    assert redact_pii(text) == text


def test_the_store_file_is_created_readable_by_its_owner_only(tmp_path):
    store = Store(tmp_path / "data" / "policydesk.sqlite3")
    store.log_question(store.new_conversation("api"), "call me on +44 20 7946 0958", "api")
    assert {p.name for p in (tmp_path / "data").iterdir()} >= {"policydesk.sqlite3", "policydesk.sqlite3-wal"}
    for path in (tmp_path / "data").iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"


def test_an_existing_store_file_is_tightened_to_owner_only(tmp_path):
    db = tmp_path / "policydesk.sqlite3"
    db.touch(mode=0o644)
    db.chmod(0o644)
    Store(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
