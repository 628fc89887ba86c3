"""Settings page (admin): the configuration this console runs with, secrets masked, and who may sign in."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bot.core.config import Settings
from bot.surfaces.console_auth import oidc_providers, require_page
from bot.surfaces.settings_view import settings_rows
from bot.surfaces.users import UsersFile

settings = Settings()
identity = require_page("settings", settings)

st.title("Settings")
st.caption("Read-only: change these with POLICYDESK_* environment variables or policydesk.toml and restart.")
st.dataframe(pd.DataFrame(settings_rows(settings)), hide_index=True, width="stretch")

st.subheader("Console users")
providers = oidc_providers()
st.caption("Identity provider: " + (", ".join(p or "default" for p in providers) if providers else "none")
           + f" · users file `{settings.users_path}` (manage with `policydesk users add|remove|list`).")
users = UsersFile(settings.users_path).load()
if users:
    st.dataframe(pd.DataFrame([{"user": u.name, "role": u.role.value, "signs in with": u.method}
                               for u in users.values()]), hide_index=True, width="stretch")
else:
    st.info("No users configured: the console serves this machine (127.0.0.1) only.")
