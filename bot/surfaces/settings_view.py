"""The Settings an operator may look at: one row per field, with secrets and URL passwords masked."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.core.config import Settings

MASK = "********"


def _shown(name: str, value: Any) -> str:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(name, v) for v in value)
    if name.endswith("_url") and isinstance(value, str) and "@" in value:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except ArgumentError:
            return MASK  # not a URL SQLAlchemy can parse: do not risk showing a credential
    return "" if value is None else str(value)


def settings_rows(settings: Settings) -> list[dict[str, str]]:
    """Rows (setting, value, description) for every Settings field, secrets replaced by a mask."""
    rows = []
    for name, field in type(settings).model_fields.items():
        rows.append({"setting": name, "value": _shown(name, getattr(settings, name)),
                     "description": field.description or ""})
    return rows
