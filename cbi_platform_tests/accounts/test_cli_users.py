"""`cbi users add|list|reset|remove` through the CLI's main(), against a real store."""

from __future__ import annotations

import io
import sqlite3

import pytest

from cbi_platform import cli
from cbi_platform.accounts.sessions import Sessions
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import SignInRefused, Users

PASSWORD = "a long enough password"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CBI_HOME", str(tmp_path))
    monkeypatch.delenv("CBI_ACCOUNTS_DSN", raising=False)
    return tmp_path


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_add_list_reset_remove(home, capsys, monkeypatch):
    _stdin(monkeypatch, PASSWORD + "\n")
    args = ["users", "add", "--email", "Kim@Example.com", "--name", "Kim", "--password-stdin"]
    assert cli.main(args) == 0
    assert "added buyer kim@example.com (Kim)" in capsys.readouterr().out
    users = Users(AccountStore(home / "accounts.sqlite3"))
    kim = users.authenticate("kim@example.com", PASSWORD, "test")
    Sessions(users.store).create(kim)

    assert cli.main(["users", "list"]) == 0
    listed = capsys.readouterr().out
    assert "kim@example.com" in listed and "buyer" in listed and "sessions 1" in listed
    stored = sqlite3.connect(home / "accounts.sqlite3").execute("SELECT password_hash FROM users")
    assert stored.fetchone()[0] not in listed and "argon2" not in listed

    assert cli.main(["users", "reset", "--email", "kim@example.com"]) == 0
    out = capsys.readouterr()
    one_time = out.out.strip()
    assert len(one_time) >= 12 and "shown only now" in out.err
    assert users.store.table_counts()["sessions"] == 0
    assert users.authenticate("kim@example.com", one_time, "test").id == kim.id
    with pytest.raises(SignInRefused):
        users.authenticate("kim@example.com", PASSWORD, "test")

    assert cli.main(["users", "remove", "--email", "kim@example.com"]) == 0
    capsys.readouterr()
    assert users.store.table_counts()["users"] == 0
    assert cli.main(["users", "remove", "--email", "kim@example.com"]) == 1
    assert "no user with email kim@example.com" in capsys.readouterr().err


def test_bad_input_is_a_clear_error_and_adds_nothing(home, capsys, monkeypatch):
    _stdin(monkeypatch, "short\n")
    assert cli.main(["users", "add", "--email", "a@x.com", "--name", "A", "--password-stdin"]) == 1
    assert "at least 10 characters" in capsys.readouterr().err
    _stdin(monkeypatch, PASSWORD + "\n")
    assert cli.main(["users", "add", "--email", "nope", "--name", "A", "--password-stdin"]) == 1
    assert "not a valid address" in capsys.readouterr().err
    assert AccountStore(home / "accounts.sqlite3").table_counts()["users"] == 0
    with pytest.raises(SystemExit):  # argparse refuses an unknown role
        cli.main(["users", "add", "--email", "a@x.com", "--name", "A", "--role", "admin"])


def test_the_interactive_prompt_asks_twice(home, capsys, monkeypatch):
    answers = iter([PASSWORD, "something else entirely"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["users", "add", "--email", "a@x.com", "--name", "A"]) == 1
    assert "the two passwords differ" in capsys.readouterr().err
    answers = iter([PASSWORD, PASSWORD])
    assert (
        cli.main(["users", "add", "--email", "a@x.com", "--name", "A", "--role", "engineer"]) == 0
    )
    assert "added engineer a@x.com" in capsys.readouterr().out
