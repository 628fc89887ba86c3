"""Console users and roles: a local JSON file of names, roles and argon2 password hashes (`policydesk users`).

The same file gives roles to people who sign in through an identity provider (OIDC, `st.login`): such a user is
listed by e-mail address without a password hash.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from filelock import FileLock

from bot.core.errors import AuthError


class Role(StrEnum):
    """What a console user may open: each role adds pages to the one before it."""

    AGENT = "agent"
    LEAD = "lead"
    ADMIN = "admin"


# Page ids (file stems under pages/) each role may open; the console's navigation shows exactly these.
ROLE_PAGES: dict[Role, tuple[str, ...]] = {
    Role.AGENT: ("console",),
    Role.LEAD: ("console", "analytics", "handoffs"),
    Role.ADMIN: ("console", "analytics", "handoffs", "knowledge_base", "settings"),
}

MIN_PASSWORD_CHARS = 10
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@dataclass(frozen=True)
class User:
    """One console user; password_hash None means they sign in through the identity provider only."""

    name: str
    role: Role
    password_hash: str | None = None

    @property
    def method(self) -> str:
        """How this user signs in: 'password' or 'oidc'."""
        return "password" if self.password_hash else "oidc"


def normalise_name(name: str) -> str:
    """A user name or e-mail as stored: trimmed, lower-case; AuthError when it has characters we do not accept."""
    clean = (name or "").strip().lower()
    if not _NAME.match(clean):
        raise AuthError(f"User name {name!r} is not valid: use 1-128 letters, digits and . _ @ + - "
                        "(an e-mail address for identity-provider users).")
    return clean


def parse_role(role: str) -> Role:
    """The Role named by role; AuthError listing the choices otherwise."""
    try:
        return Role((role or "").strip().lower())
    except ValueError:
        raise AuthError(f"Unknown role {role!r}: choose one of {', '.join(r.value for r in Role)}.") from None


class UsersFile:
    """The console's users, stored as JSON at path (mode 0600); every change is written atomically under a lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")

    def load(self) -> dict[str, User]:
        """All users by name; an absent file is an empty directory, a damaged one an AuthError."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise AuthError(f"The users file {self.path} cannot be read ({exc}); restore it from a backup or "
                            "delete it and add the users again with `policydesk users add`.") from exc
        users: dict[str, User] = {}
        for name, entry in (raw.get("users") or {}).items():
            try:
                users[name] = User(name, Role(entry["role"]), entry.get("password_hash") or None)
            except (KeyError, TypeError, ValueError) as exc:
                raise AuthError(f"The users file {self.path} has a bad entry for {name!r} ({exc}).") from exc
        return users

    def add(self, name: str, role: str | Role, password: str | None = None) -> User:
        """Add or update a user; without a password they can sign in only through the identity provider."""
        name, role = normalise_name(name), parse_role(str(role))
        if password is not None and len(password) < MIN_PASSWORD_CHARS:
            raise AuthError(f"The password is too short: use at least {MIN_PASSWORD_CHARS} characters.")
        user = User(name, role, _hasher.hash(password) if password is not None else None)
        with self._lock:
            users = self.load()
            users[name] = user
            self._write(users)
        return user

    def remove(self, name: str) -> bool:
        """Remove a user; False when there was no such user."""
        name = normalise_name(name)
        with self._lock:
            users = self.load()
            if users.pop(name, None) is None:
                return False
            self._write(users)
        return True

    def verify(self, name: str, password: str) -> User | None:
        """The user when name and password match a password user, else None (same work for unknown names)."""
        try:
            user = self.load().get(normalise_name(name))
        except AuthError:
            user = None
        stored = user.password_hash if user is not None else None
        try:
            # An unknown name still costs one argon2 verification, so timing does not reveal which names exist.
            _hasher.verify(stored or _DUMMY_HASH, password or "")
        except (VerificationError, InvalidHashError):
            return None
        return user if stored else None

    def _write(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"users": {u.name: {"role": u.role.value, **({"password_hash": u.password_hash}
                                                            if u.password_hash else {})}
                          for u in sorted(users.values(), key=lambda u: u.name)}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)  # password hashes: readable by the service account only
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=2)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


_DUMMY_HASH = _hasher.hash("policydesk-no-such-user")
