"""Console sign-in and roles: the users file (real argon2, real files) and the app under AppTest over the kb/ index."""

from __future__ import annotations

import sqlite3
import stat

import pytest
from streamlit.testing.v1 import AppTest
from test_app import _ENV, APP, ROOT, TIMEOUT, assistant_messages, run

from bot.core.config import Settings
from bot.core.errors import AuthError
from bot.surfaces.console_auth import PASSWORD_SESSION_KEY, REFUSED
from bot.surfaces.settings_view import MASK, settings_rows
from bot.surfaces.users import Role, UsersFile

PASSWORD = "correct horse battery"


# ---- the users file ------------------------------------------------------------------------------------------
def test_users_file_hashes_passwords_and_verifies_them(tmp_path):
    users = UsersFile(tmp_path / "users.json")
    users.add("Alice", "lead", PASSWORD)
    users.add("bob@example.com", Role.AGENT)  # identity-provider user: no password
    raw = (tmp_path / "users.json").read_text()
    assert PASSWORD not in raw and "$argon2id$" in raw
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert users.verify("alice", PASSWORD).role is Role.LEAD
    assert users.verify("ALICE ", PASSWORD).name == "alice"
    assert users.verify("alice", PASSWORD + "x") is None
    assert users.verify("nobody", PASSWORD) is None
    assert users.verify("bob@example.com", "") is None  # OIDC-only users never sign in with a password
    assert {u.name: u.method for u in users.load().values()} == {"alice": "password", "bob@example.com": "oidc"}
    assert users.remove("alice") and not users.remove("alice")
    assert list(users.load()) == ["bob@example.com"]


@pytest.mark.parametrize("call, message", [
    (lambda u: u.add("a b", "agent", PASSWORD), "not valid"),
    (lambda u: u.add("carol", "boss", PASSWORD), "Unknown role 'boss'"),
    (lambda u: u.add("carol", "agent", "short"), "too short"),
])
def test_users_file_rejects_bad_input_with_a_clear_message(tmp_path, call, message):
    users = UsersFile(tmp_path / "users.json")
    with pytest.raises(AuthError, match=message):
        call(users)
    assert not (tmp_path / "users.json").exists()


def test_damaged_users_file_is_named_in_the_error(tmp_path):
    (tmp_path / "users.json").write_text("{not json")
    with pytest.raises(AuthError, match="users.json cannot be read"):
        UsersFile(tmp_path / "users.json").load()


def test_settings_view_masks_secrets_and_database_passwords(tmp_path):
    s = Settings(data_dir=tmp_path, openai_api_key="sk-secret-value", api_keys=["k1-secret"],
                 database_url="postgresql+psycopg://pd:hunter2secret@db.internal/policydesk")
    shown = {r["setting"]: r["value"] for r in settings_rows(s)}
    assert shown["openai_api_key"] == MASK and shown["api_keys"] == MASK
    assert "hunter2secret" not in shown["database_url"] and "db.internal" in shown["database_url"]
    assert "secret" not in " ".join(shown.values())


# ---- the app -------------------------------------------------------------------------------------------------
@pytest.fixture()
def team_env(monkeypatch, kb_settings, kb_index, tmp_path):
    """The console over the session's kb/ index with a users file of one agent, one lead and one admin."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    users_path = tmp_path / "users.json"
    users = UsersFile(users_path)
    for name, role in (("alice", "agent"), ("lena", "lead"), ("ada", "admin")):
        users.add(name, role, PASSWORD)
    monkeypatch.setenv("POLICYDESK_DATA_DIR", str(kb_settings.data_dir))
    monkeypatch.setenv("POLICYDESK_KB_DIR", str(kb_settings.kb_dir))
    monkeypatch.setenv("POLICYDESK_USERS_FILE", str(users_path))
    return kb_settings


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="pd_sign_in_name").input(name)
    at.text_input(key="pd_sign_in_password").input(password)
    at.button[0].click()  # the form's submit button
    return run(at)


def test_anonymous_visitor_gets_only_the_sign_in_form(team_env):
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    assert [t.value for t in at.title] == ["Sign in to PolicyDesk"]
    assert not at.chat_input and not at.dataframe and not at.metric
    sign_in(at, "alice", "wrong password!")
    assert [e.value for e in at.error] == ["Wrong user name or password."]
    assert not at.chat_input


def test_signed_in_agent_is_recorded_in_the_audit_log(team_env):
    at = sign_in(run(AppTest.from_file(APP, default_timeout=TIMEOUT)), "alice", PASSWORD)
    assert at.chat_input, "the console page should open after sign-in"
    assert any("Signed in as **alice** (agent)" in m.value for m in at.sidebar.markdown)
    question = "How many days does a user have to request a refund of unused coins? (auth test)"
    at.chat_input[0].set_value(question)
    run(at)
    assert assistant_messages(at)
    conn = sqlite3.connect(team_env.db_path)
    try:
        users = conn.execute("SELECT user FROM messages WHERE question = ?", (question,)).fetchall()
        who = conn.execute("SELECT a.who FROM audit_log a JOIN messages m ON m.id = a.message_id "
                           "WHERE m.question = ?", (question,)).fetchall()
    finally:
        conn.close()
    assert users == [("alice",)] and who and set(who) == {("alice",)}


def test_a_page_outside_the_role_is_not_in_the_navigation(team_env):
    at = sign_in(run(AppTest.from_file(APP, default_timeout=TIMEOUT)), "lena", PASSWORD)
    with pytest.raises(ValueError, match="Could not find a navigation page") as info:
        at.switch_page("pages/knowledge_base.py")
    assert "analytics.py" in str(info.value) and "handoffs.py" in str(info.value)


@pytest.mark.parametrize("signed_in, allowed", [(None, False), ("lena", False), ("ada", True)])
def test_a_page_run_directly_checks_the_role_itself(team_env, signed_in, allowed):
    """Defence in depth: each page resolves the identity and checks its role, whatever routed to it."""
    at = AppTest.from_file(str(ROOT / "pages" / "knowledge_base.py"), default_timeout=TIMEOUT)
    if signed_in is not None:
        at.session_state[PASSWORD_SESSION_KEY] = signed_in  # what a successful password sign-in leaves
    run(at)
    if allowed:
        assert at.title[0].value == "Knowledge base" and not at.error
    else:
        assert [e.value for e in at.error] == [REFUSED] and not at.title and not at.button


def test_admin_sees_the_settings_page_with_users(team_env):
    at = sign_in(run(AppTest.from_file(APP, default_timeout=TIMEOUT)), "ada", PASSWORD)
    at.switch_page("pages/settings.py")
    run(at)
    assert at.title[0].value == "Settings"
    users = next(df.value for df in at.dataframe if "role" in df.value.columns)
    assert dict(zip(users["user"], users["role"])) == {"ada": "admin", "alice": "agent", "lena": "lead"}


def test_removed_user_loses_access_on_the_next_run(team_env, tmp_path):
    at = sign_in(run(AppTest.from_file(APP, default_timeout=TIMEOUT)), "alice", PASSWORD)
    assert at.chat_input
    UsersFile(tmp_path / "users.json").remove("alice")
    run(at)
    assert not at.chat_input
    assert [t.value for t in at.title] == ["Sign in to PolicyDesk"] or [e.value for e in at.error] == [REFUSED]


def test_without_users_the_local_browser_is_the_admin_and_is_told_so(monkeypatch, kb_settings, kb_index, tmp_path):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POLICYDESK_DATA_DIR", str(kb_settings.data_dir))
    monkeypatch.setenv("POLICYDESK_KB_DIR", str(kb_settings.kb_dir))
    monkeypatch.setenv("POLICYDESK_USERS_FILE", str(tmp_path / "none.json"))
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    assert at.chat_input
    assert any("Signed in as **local** (admin)" in m.value for m in at.sidebar.markdown)
    assert any("serves this machine (127.0.0.1) only" in c.value for c in at.sidebar.caption)
