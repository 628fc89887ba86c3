"""Sign-in for the Streamlit console: identity-provider (OIDC, `st.login`) or local users file, and role checks.

app.py calls `resolve_identity` on every run to build the navigation; each page calls `require_page` first, which
resolves the identity again (the users file is re-read, so a removed user or changed role counts at once) and
refuses a role that does not include the page, however the page was reached. With no users and no identity
provider configured the console serves loopback clients only, as the single local admin.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import streamlit as st

from bot.core.config import Settings
from bot.core.errors import AuthError
from bot.surfaces.users import ROLE_PAGES, Role, User, UsersFile

log = logging.getLogger(__name__)

PASSWORD_SESSION_KEY = "pd_password_user"  # not a widget key: the browser cannot set it
LOCAL_NAME = "local"
REFUSED = "You do not have access to this page. Ask an administrator for a role that includes it."
FAILED_SIGN_IN_DELAY_S = 1.0  # slows password guessing; argon2 verification already costs tens of ms


@dataclass(frozen=True)
class Identity:
    """Who is using the console: the name recorded in the audit log, their role and how they signed in."""

    name: str
    role: Role
    method: str  # "password", "oidc" or "loopback"

    def may_open(self, page: str) -> bool:
        """Whether this identity's role includes the page id (a file stem under pages/)."""
        return page in ROLE_PAGES[self.role]


def oidc_providers() -> list[str | None]:
    """Identity providers configured in .streamlit/secrets.toml [auth]: None is the unnamed default provider."""
    try:
        if not st.secrets.load_if_toml_exists():
            return []
        auth = st.secrets.get("auth")
    except Exception:  # a malformed secrets.toml: Streamlit's own error says which line; run without OIDC
        log.exception("could not read .streamlit/secrets.toml")
        return []
    if not isinstance(auth, Mapping):
        return []
    named = [str(k) for k, v in auth.items() if isinstance(v, Mapping)]
    return named or ([None] if "client_id" in auth else [])


def is_loopback_client() -> bool:
    """True when the browser connects from this machine directly (not through a proxy that forwards others)."""
    headers = st.context.headers
    if any(headers.get(h) for h in ("X-Forwarded-For", "Forwarded", "X-Real-Ip")):
        return False
    ip = st.context.ip_address
    if not isinstance(ip, str):
        # Streamlit gives None for 127.0.0.1 and ::1; AppTest, which has no browser connection, gives a mock.
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _oidc_identity(users: dict[str, User]) -> Identity | None:
    """The identity of a user signed in through the identity provider, or None; stops with a message if unknown."""
    if not st.user.is_logged_in:
        return None
    email = str(st.user.get("email") or "").strip().lower()
    user = users.get(email) if email else None
    if user is None:
        st.title("No PolicyDesk role")
        st.error(f"You are signed in as {email or 'an account without an e-mail address'}, but this account has "
                 "no PolicyDesk role. Ask an administrator to run `policydesk users add <your e-mail> --role "
                 "agent`.")
        st.button("Sign out", on_click=st.logout, key="pd_sign_out_unknown")
        st.stop()
    return Identity(user.name, user.role, "oidc")


def resolve_identity(settings: Settings) -> Identity | None:
    """The signed-in identity for this run, None when nobody is signed in; stops with a message when refused."""
    try:
        users = UsersFile(settings.users_path).load()
    except AuthError as exc:
        st.error(str(exc))
        st.stop()
    providers = oidc_providers()
    if not users and not providers:
        if is_loopback_client():
            st.session_state.pop(PASSWORD_SESSION_KEY, None)
            return Identity(LOCAL_NAME, Role.ADMIN, "loopback")
        st.error("This console has no users configured, so it only serves browsers on the same machine "
                 "(127.0.0.1). Add users with `policydesk users add NAME --role agent|lead|admin` or configure an "
                 "identity provider (docs/console-auth.md).")
        st.stop()
    if providers:
        identity = _oidc_identity(users)
        if identity is not None:
            return identity
    name = st.session_state.get(PASSWORD_SESSION_KEY)
    user = users.get(name) if name else None
    if user is None or user.password_hash is None:  # removed or turned into an OIDC-only user since sign-in
        st.session_state.pop(PASSWORD_SESSION_KEY, None)
        return None
    return Identity(user.name, user.role, "password")


def sign_in_page(settings: Settings) -> None:
    """The only page an anonymous visitor gets: identity-provider buttons and/or the user name + password form."""
    st.title("Sign in to PolicyDesk")
    for provider in oidc_providers():
        label = "Sign in with " + (provider.replace("_", " ").title() if provider else "your identity provider")
        st.button(label, on_click=st.login, args=(provider,) if provider else (), type="primary",
                  key=f"pd_oidc_{provider or 'default'}")
    users_file = UsersFile(settings.users_path)
    if not any(u.password_hash for u in users_file.load().values()):
        return
    with st.form("pd_sign_in"):
        name = st.text_input("User name", key="pd_sign_in_name")
        password = st.text_input("Password", type="password", key="pd_sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        user = users_file.verify(name, password)
        if user is None:
            log.warning("console sign-in failed for %r", (name or "")[:128])
            time.sleep(FAILED_SIGN_IN_DELAY_S)
            st.error("Wrong user name or password.")
            return
        st.session_state[PASSWORD_SESSION_KEY] = user.name
        log.info("console sign-in: %s (%s)", user.name, user.role.value)
        st.rerun()


def sign_out() -> None:
    """Button callback: forget the password sign-in, and end the identity-provider session if there is one."""
    st.session_state.pop(PASSWORD_SESSION_KEY, None)
    if oidc_providers() and st.user.is_logged_in:
        st.logout()


def require_page(page: str, settings: Settings) -> Identity:
    """The signed-in identity when its role may open page; otherwise an error and the page stops."""
    identity = resolve_identity(settings)
    if identity is None or not identity.may_open(page):
        st.error(REFUSED)
        st.stop()
    return identity
