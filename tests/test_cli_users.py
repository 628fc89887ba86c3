"""`policydesk users add|remove|list` as an operator runs it: real processes, a real users file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.surfaces.users import Role, UsersFile

EXE = str(Path(sys.executable).parent / "policydesk")


def cli(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    return subprocess.run([EXE, "--data-dir", str(data_dir), "users", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_users_add_list_remove_round_trip(tmp_path):
    added = cli(tmp_path, "add", "Lena", "--role", "lead", "--password-stdin", stdin="correct horse battery\n")
    assert added.returncode == 0, added.stderr
    assert cli(tmp_path, "add", "ada@example.com", "--role", "admin", "--oidc").returncode == 0
    users = UsersFile(tmp_path / "users.json")
    assert users.verify("lena", "correct horse battery").role is Role.LEAD
    listed = cli(tmp_path, "list")
    assert "lena" in listed.stdout and "ada@example.com" in listed.stdout and "oidc" in listed.stdout
    assert "$argon2" not in listed.stdout
    assert cli(tmp_path, "remove", "lena").returncode == 0
    assert list(users.load()) == ["ada@example.com"]


def test_operator_mistakes_get_one_line_and_change_nothing(tmp_path):
    short = cli(tmp_path, "add", "bob", "--password-stdin", stdin="short\n")
    bad_role = cli(tmp_path, "add", "bob", "--role", "boss", "--oidc")
    missing = cli(tmp_path, "remove", "nobody")
    for result, text in ((short, "too short"), (bad_role, "Unknown role 'boss'"), (missing, "no user 'nobody'")):
        assert result.returncode != 0 and text in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "users.json").exists()
