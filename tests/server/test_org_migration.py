"""An install from before organisations, upgraded: a database of the old schema (core
version 5; the staff, audit and applications tables one version back) with a session,
its seats and a recording, a staff account, an audit entry, an application and a
facilitator. The new server starts on it; everything belongs to the default
organisation, the old account signs in and sees and works with all of it as before."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from storyroom.app import STORE_MODULES
from storyroom.database import PerDialect
from storyroom.orgs import DEFAULT_ORG_ID
from storyroom.staff.accounts import hash_password
from storyroom.store import MIGRATIONS
from support.server import serving
from support.staff import STAFF_EMAIL, STAFF_PASSWORD, StaffBrowser, cookie_session

CORE_BEFORE = 5
# the module versions before organisations; the rest of each module's tables are current
MODULES_BEFORE = {"staff": 1, "audit": 1, "applications": 2}
NOW = time.time()

# about the embedded SQLite file itself (written and read here as a file)
pytestmark = pytest.mark.embedded_database


def old_database(path: Path) -> None:
    """The schema and rows of an install from before organisations."""
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    try:
        for script in MIGRATIONS[:CORE_BEFORE]:
            db.executescript(script.body("sqlite") if isinstance(script, PerDialect) else script)
        db.execute(f"PRAGMA user_version = {CORE_BEFORE}")
        for module in STORE_MODULES:
            version = MODULES_BEFORE.get(module.name, len(module.scripts))
            for script in module.scripts[:version]:
                db.executescript(
                    script.body("sqlite") if isinstance(script, PerDialect) else script
                )
            db.execute("INSERT INTO module_versions VALUES (?, ?)", (module.name, version))
        db.execute(
            "INSERT INTO sessions (id, title, language, target_minutes, questions, created_at)"
            " VALUES ('ses_old', 'Before organisations', 'en', 40, '[]', ?)",
            (NOW - 3600,),
        )
        for seat, name in (("a", "Ana"), ("b", "Ben"), ("facilitator", "Fay")):
            db.execute(
                "INSERT INTO seats (session_id, seat, name, token_hash, token_expires_at)"
                " VALUES ('ses_old', ?, ?, ?, ?)",
                (seat, name, f"hash-{seat}", NOW + 86400),
            )
        db.execute(
            "INSERT INTO recordings (id, session_id, take, status, started_at, stopped_at,"
            " finalize_status, finalize_reason) VALUES ('rec_old', 'ses_old', 1, 'stopped', ?,"
            " ?, 'failed', 'made by the test')",
            (NOW - 3000, NOW - 600),
        )
        db.execute(
            "INSERT INTO staff_users (email, password_hash, created_at, password_changed_at)"
            " VALUES (?, ?, ?, ?)",
            (STAFF_EMAIL, hash_password(STAFF_PASSWORD), NOW, NOW),
        )
        db.execute(
            "INSERT INTO audit_log (at, actor, action, target, detail, address)"
            " VALUES (?, ?, 'download', 'rec_old', '{}', '127.0.0.1')",
            (NOW - 500, STAFF_EMAIL),
        )
        window = json.dumps([{"day": 1, "start": "18:00", "end": "21:00"}])
        db.execute(
            "INSERT INTO applications (id, status, created_at, updated_at, first_name,"
            " last_name, email, city, region, time_zone, language, speaks, placement, bio,"
            " availability, consented_at) VALUES ('app_old', 'new', ?, ?, 'Olga', 'Old',"
            " 'olga@example.org', 'Austin', 'TX', 'America/Chicago', 'en', '[\"en\"]', 3,"
            " 'Librarian.', ?, ?)",
            (NOW, NOW, window, NOW),
        )
        db.execute(
            "INSERT INTO facilitators (id, first_name, email, language, speaks, time_zone,"
            " availability, created_at) VALUES ('fac_old', 'Fred', 'fred@example.org', 'en',"
            " '[\"en\"]', 'America/Chicago', ?, ?)",
            (window, NOW),
        )
        db.commit()
    finally:
        db.close()


async def test_an_old_database_moves_into_the_default_organisation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_database(data / "storyroom.sqlite3")
    async with serving(data) as server:
        db = server.services.store.db
        assert await server.services.store.schema_version() == len(MIGRATIONS)
        for table in ("sessions", "staff_users", "audit_log", "applications", "facilitators"):
            async with db.execute(f"SELECT DISTINCT org_id FROM {table}") as cur:
                assert [r[0] for r in await cur.fetchall()] == [DEFAULT_ORG_ID], table
        staff = StaffBrowser(cookie_session(), server.url)
        try:
            status, body = await staff.sign_in()
            assert status == 200, body
            me = await staff.call("GET", "/api/staff/me")
            assert me["role"] == "admin" and me["organisation"]["slug"] == "default"
            assert me["organisation"]["name"] == ""  # nothing new to show
            sessions = (await staff.call("GET", "/api/sessions"))["sessions"]
            assert [s["id"] for s in sessions] == ["ses_old"]
            session = await staff.call("GET", "/api/sessions/ses_old")
            assert {s: v["name"] for s, v in session["seats"].items()} == {
                "a": "Ana",
                "b": "Ben",
                "facilitator": "Fay",
            }
            recordings = (await staff.call("GET", "/api/recordings"))["recordings"]
            assert [r["id"] for r in recordings] == ["rec_old"]
            assert (await staff.call("GET", "/api/recordings/rec_old"))["status"] == "failed"
            applications = (await staff.call("GET", "/api/applications"))["applications"]
            assert [a["id"] for a in applications] == ["app_old"]
            facilitators = (await staff.call("GET", "/api/facilitators"))["facilitators"]
            assert [f["id"] for f in facilitators] == ["fac_old"]
            entries = (await staff.call("GET", "/api/audit?target=rec_old"))["entries"]
            assert [(e["actor"], e["action"]) for e in entries] == [(STAFF_EMAIL, "download")]
            # and work goes on as before: a new session, a new account of their own
            created = await staff.call(
                "POST",
                "/api/sessions",
                {
                    "title": "After",
                    "language": "es",
                    "target_minutes": 40,
                    "participants": [{"name": "Inés"}, {"name": "Juan"}],
                    "facilitator": {"name": "Lupe"},
                },
                expect=201,
            )
            assert (await server.services.store.session_organisation(created["id"])).slug == (
                "default"
            )
            added = await staff.call(
                "POST",
                "/api/staff/accounts",
                {"email": "new@example.org", "password": "another long password"},
                expect=201,
            )
            assert (added["org_id"], added["role"]) == (DEFAULT_ORG_ID, "staff")
        finally:
            await staff.http.close()
