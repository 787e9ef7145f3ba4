"""`storyroom staff add` with an organisation and a role: platform admins are made only
here, by whoever runs the server; a slug that names no organisation is refused."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from storyroom.__main__ import main
from support.staff import STAFF_PASSWORD

# about the embedded SQLite file itself (written and read here as a file)
pytestmark = pytest.mark.embedded_database


def test_staff_add_with_an_organisation_and_a_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"

    def run(*argv: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(STAFF_PASSWORD + "\n"))
        return main([*argv, "--data-dir", str(data)])

    assert run("staff", "add", "ops@example.org", "--role", "platform") == 0
    assert (
        run("staff", "add", "ana@example.org", "--organisation", "default", "--role", "staff") == 0
    )
    assert run("staff", "add", "lee@example.org") == 0
    assert run("staff", "add", "kim@example.org", "--organisation", "nowhere") == 2
    with pytest.raises(SystemExit):
        run("staff", "add", "kim@example.org", "--role", "owner")
    with sqlite3.connect(data / "storyroom.sqlite3") as db:
        rows = db.execute("SELECT email, org_id, role FROM staff_users ORDER BY email").fetchall()
    assert rows == [
        ("ana@example.org", 1, "staff"),
        ("lee@example.org", 1, "admin"),
        ("ops@example.org", 1, "platform"),
    ]
