"""The staff archive over HTTP, on a real finalized recording: sign in, find, download,
edit, consent, copies for participants, the public list, withdrawal, deletion, the
audit log, and the `staff add` command."""

from __future__ import annotations

import asyncio
import hashlib
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.__main__ import main
from storyroom.database import open_database
from support.archive import Finished, copy_of, issue_copy_links
from support.polling import wait_until
from support.server import AUTH, RunningServer, serving
from support.staff import (
    STAFF_EMAIL,
    STAFF_PASSWORD,
    StaffBrowser,
    add_staff,
    cookie_session,
    signed_in,
)

LINK_DAYS = 1e-7
"""Copy links that live 8.6 ms."""


async def search(staff: StaffBrowser, query: str) -> list[str]:
    body = await staff.call("GET", f"/api/recordings?{query}")
    return [r["id"] for r in body["recordings"]]


async def test_sign_in_wrong_then_right(archive: RunningServer) -> None:
    async with cookie_session() as http:
        browser = StaffBrowser(http, archive.url)
        status, body = await browser.sign_in(password="not the password at all")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body = await browser.sign_in(email="nobody@example.org")
        assert status == 401
        status, body = await browser.sign_in(email=STAFF_EMAIL.upper())
        assert status == 200 and body["email"] == STAFF_EMAIL
        me = await browser.call("GET", "/api/staff/me")
        assert me == {
            "email": STAFF_EMAIL,
            "actor": STAFF_EMAIL,
            "via": "session",
            "csrf": browser.csrf,
            "expires_at": me["expires_at"],
        }
        await browser.call("POST", "/api/staff/signout")
        resp = await http.get(f"{archive.url}/api/staff/me")
        assert resp.status == 401


async def test_find_by_first_name_keyword_language_status_and_date(
    staff: StaffBrowser, finished: Finished
) -> None:
    rec = finished.recording_id
    assert await search(staff, "") == [rec]
    assert await search(staff, "name=rosa") == [rec]
    assert await search(staff, "name=Sam") == [rec]  # the facilitator's first name
    assert await search(staff, "name=Nobody") == []
    assert await search(staff, "language=en") == [rec]
    assert await search(staff, "language=es") == []
    assert await search(staff, "status=ready") == [rec]
    assert await search(staff, "status=failed") == []
    assert await search(staff, "from=2000-01-01&to=2999-12-31") == [rec]
    assert await search(staff, "to=2000-01-01") == []
    assert await search(staff, "q=porch+light") == [rec]
    assert await search(staff, "consent=archive") == [rec]
    assert await search(staff, "consent=copies") == []
    assert await search(staff, "keyword=ohio") == []
    await staff.call(
        "PATCH",
        f"/api/recordings/{rec}/metadata",
        {"keywords": ["Ohio", "nursing", "ohio"], "location": "El Paso, Texas"},
    )
    assert await search(staff, "keyword=OHIO") == [rec]
    assert await search(staff, "q=el+paso+nursing") == [rec]
    listing = await staff.call("GET", "/api/recordings")
    row = listing["recordings"][0]
    assert row["people"] == {"a": "Rosa", "b": "Dale", "facilitator": "Sam"}
    assert row["metadata"]["keywords"] == ["Ohio", "nursing"]
    assert row["consent"] == {"archive": True, "public": True, "copies": False}
    for bad in ("status=nope", "language=fr", "from=yesterday", "colour=red", "consent=all"):
        resp = await staff.http.get(f"{staff.url}/api/recordings?{bad}")
        assert resp.status == 400, bad


async def test_detail_downloads_with_range_and_etag(
    staff: StaffBrowser, finished: Finished
) -> None:
    rec = await staff.call("GET", f"/api/recordings/{finished.recording_id}")
    assert rec["status"] == "ready"
    assert rec["people"]["a"] == "Rosa"
    assert len(rec["chapters"]) == 2
    assert rec["waveform_url"] == f"/api/recordings/{rec['id']}/files/waveform.svg"
    assert rec["consent_by_seat"]["a"]["archive"] is True
    assert [e["seat"] for e in rec["consent_history"]] == ["a", "b"]
    names = {f["name"] for f in rec["files"]}
    assert {"master.wav", "access.mp3", "stems/a.flac", "waveform.svg"} <= names
    http = staff.http
    for entry in rec["files"]:
        async with http.get(staff.url + entry["url"]) as resp:
            body = await resp.read()
            assert resp.status == 200, entry
            assert len(body) == entry["bytes"]
            assert hashlib.sha256(body).hexdigest() == entry["sha256"]
            assert resp.headers["ETag"] == f'"{entry["sha256"]}"'
            assert resp.headers["Accept-Ranges"] == "bytes"
    master = next(f for f in rec["files"] if f["name"] == "master.wav")
    etag = f'"{master["sha256"]}"'
    url = staff.url + master["url"]
    async with http.get(url, headers={"Range": "bytes=0-11"}) as resp:
        assert resp.status == 206
        assert await resp.read() == b"RIFF" + (await _bytes(http, url))[4:12]
        assert resp.headers["Content-Range"] == f"bytes 0-11/{master['bytes']}"
    async with http.get(url, headers={"Range": "bytes=-10"}) as resp:
        assert resp.status == 206 and len(await resp.read()) == 10
    async with http.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    async with http.get(url, headers={"Range": "bytes=4-7", "If-Range": etag}) as resp:
        assert resp.status == 206
    async with http.get(url, headers={"Range": "bytes=4-7", "If-Range": '"old"'}) as resp:
        assert resp.status == 200 and len(await resp.read()) == master["bytes"]
    async with http.get(url, headers={"Range": f"bytes={master['bytes']}-"}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{master['bytes']}"
    async with http.head(url) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == master["bytes"]
    audit = await staff.call("GET", f"/api/audit?action=download&target={rec['id']}")
    # whole downloads are logged, the player's later ranges are not
    logged = [e["detail"]["file"] for e in audit["entries"]]
    assert set(logged) == names and logged.count("master.wav") == 3
    assert {e["actor"] for e in audit["entries"]} == {STAFF_EMAIL}


async def _bytes(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as resp:
        return await resp.read()


async def test_metadata_edits_are_checked_and_logged(
    staff: StaffBrowser, finished: Finished
) -> None:
    path = f"/api/recordings/{finished.recording_id}/metadata"
    body = await staff.call(
        "PATCH",
        path,
        {"title": "Two neighbours", "description": "About porches.\nAnd faith."},
    )
    meta = body["metadata"]
    assert meta["title"] == "Two neighbours" and meta["updated_by"] == STAFF_EMAIL
    assert meta["description"] == "About porches.\nAnd faith."
    for bad in (
        {},
        {"title": ""},
        {"title": "x" * 201},
        {"keywords": "one, two"},
        {"keywords": ["x"] * 31},
        {"keywords": [5]},
        {"location": None},
        {"colour": "red"},
        {"description": "bad\u0000byte"},
    ):
        await staff.call("PATCH", path, bad, expect=400)
    rec = await staff.call("GET", f"/api/recordings/{finished.recording_id}")
    assert rec["title"] == "Two neighbours"
    entries = (await staff.call("GET", "/api/audit?action=edit"))["entries"]
    assert [e["detail"]["fields"] for e in entries] == [["description", "title"]]


async def test_copies_for_participants(staff: StaffBrowser, finished: Finished) -> None:
    rec_id = finished.recording_id
    # no copies before both participants agreed to share them
    refused = await staff.call("POST", f"/api/recordings/{rec_id}/copies", expect=409)
    assert refused["error"]["code"] == "no_copies_consent"
    issued = await issue_copy_links(staff, rec_id)
    assert [(link["seat"], link["name"]) for link in issued] == [("a", "Rosa"), ("b", "Dale")]
    rosa, dale = (link["token"] for link in issued)
    assert issued[0]["url"].startswith(f"{staff.url}/copy#token=")
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    access = next(f for f in rec["files"] if f["kind"] == "access")

    async with aiohttp.ClientSession() as participant:

        async def as_rosa(method: str, path: str, token: str = rosa, **kw: Any) -> Any:
            resp = await participant.request(
                method, staff.url + path, headers={"Authorization": f"Bearer {token}"}, **kw
            )
            body = await resp.read()
            return resp, body

        resp, body = await as_rosa("GET", "/api/copy")
        assert resp.status == 200
        page = await resp.json()
        assert page["name"] == "Rosa" and page["seat"] == "a"
        assert page["copies_allowed"] is True
        assert page["consent"] == {"archive": True, "public": True}
        assert page["file"]["bytes"] == access["bytes"]
        resp, body = await as_rosa("GET", "/api/copy/file")
        assert resp.status == 200 and hashlib.sha256(body).hexdigest() == access["sha256"]
        assert "attachment" in resp.headers["Content-Disposition"]
        # Rosa withdraws public consent from her page: off the public list at once
        public = await (await participant.get(f"{staff.url}/api/public/recordings")).json()
        assert [r["id"] for r in public["recordings"]] == [rec_id]
        resp, _ = await as_rosa("PUT", "/api/copy/consent", json={"archive": True, "public": False})
        assert resp.status == 200
        public = await (await participant.get(f"{staff.url}/api/public/recordings")).json()
        assert public["recordings"] == []
        resp, _ = await as_rosa("PUT", "/api/copy/consent", json={"archive": "no"})
        assert resp.status == 400
        # Dale withdraws his consent to copies (through staff): neither copy downloads
        await staff.call(
            "PUT",
            f"/api/recordings/{rec_id}/consent",
            {"seat": "b", "copies": False, "note": "email of 3 May"},
        )
        resp, _ = await as_rosa("GET", "/api/copy/file")
        assert resp.status == 403
        resp, body = await as_rosa("GET", "/api/copy")
        assert resp.status == 200 and (await resp.json())["copies_allowed"] is False
        # a revoked link opens nothing
        await staff.call("POST", f"/api/copies/{issued[1]['id']}/revoke")
        resp, body = await as_rosa("GET", "/api/copy", token=dale)
        assert resp.status == 401 and b"link_revoked" in body
        resp, body = await as_rosa("GET", "/api/copy", token="x" * 32)
        assert resp.status == 401 and b"link_invalid" in body
        # a copy link is not a staff credential
        resp, _ = await as_rosa("GET", f"/api/recordings/{rec_id}")
        assert resp.status == 401

    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    history = rec["consent_history"]
    assert [(e["kind"], e["seat"], e["source"]) for e in history][-4:] == [
        ("copies", "a", "staff"),
        ("copies", "b", "staff"),
        ("consent", "a", "copy link"),
        ("copies", "b", "staff"),
    ]
    assert rec["consent"] == {"archive": True, "public": False, "copies": False}
    states = {link["id"]: link["state"] for link in rec["copy_links"]}
    assert states == {issued[0]["id"]: "active", issued[1]["id"]: "revoked"}
    assert next(link for link in rec["copy_links"] if link["seat"] == "a")["downloads"] == 1
    actions = [e["action"] for e in (await staff.call("GET", "/api/audit"))["entries"]]
    assert actions.count("consent") == 3
    assert "copies_issued" in actions and "copy_revoked" in actions


@pytest.mark.parametrize("archive_settings", [{"copy_link_days": str(LINK_DAYS)}])
async def test_expired_copy_links(staff: StaffBrowser, finished: Finished) -> None:
    links = await issue_copy_links(staff, finished.recording_id)
    # issued before this moment, so expired once it is LINK_DAYS past
    await wait_until(time.time() + LINK_DAYS * 86400, clock=time.time)
    resp = await staff.http.get(
        f"{staff.url}/api/copy", headers={"Authorization": f"Bearer {links[0]['token']}"}
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "link_expired"


async def _rows(server: RunningServer, recording_id: str) -> dict[str, int]:
    tables = {
        "recordings": "id",
        "recording_events": "recording_id",
        "cues": "recording_id",
        "markers": "recording_id",
        "notes": "recording_id",
        "recording_metadata": "recording_id",
        "copy_links": "recording_id",
        "bag_exports": "recording_id",
    }
    db = await open_database(server.settings.database)  # a connection of the test's own
    try:
        counts = {}
        for table, column in tables.items():
            row = await db.fetch_one(
                f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (recording_id,)
            )
            counts[table] = int(row[0]) if row else -1
        return counts
    finally:
        await db.close()


async def test_deletion_removes_every_file_and_row(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rec_id = finished.recording_id
    path = f"/api/recordings/{rec_id}"
    await staff.call("PATCH", f"{path}/metadata", {"title": "To be deleted"})
    await issue_copy_links(staff, rec_id)
    export = (await staff.call("POST", f"{path}/exports", expect=201))["export"]
    rec_dir = archive.settings.recordings_dir / rec_id
    export_dir = archive.settings.data_dir / "exports" / export["id"]
    assert rec_dir.is_dir() and export_dir.is_dir()
    before = await _rows(archive, rec_id)
    assert before["recordings"] == 1 and before["cues"] == 2 and before["copy_links"] == 2

    await staff.call("DELETE", path)
    assert not rec_dir.exists() and not export_dir.exists()
    assert set((await _rows(archive, rec_id)).values()) == {0}
    await staff.call("GET", path, expect=404)
    await staff.call("DELETE", path, expect=404)
    assert await search(staff, "") == []
    # the audit log keeps what happened to it, and cannot be changed
    entries = (await staff.call("GET", f"/api/audit?target={rec_id}"))["entries"]
    assert [e["action"] for e in entries][:2] == ["delete", "export"]
    db = await open_database(archive.settings.database)
    try:
        for sql in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(Exception, match="append-only"):
                await db.execute(sql)
            await db.rollback()
        row = await db.fetch_one("SELECT COUNT(*) FROM audit_log")
        assert row is not None and row[0] > 0
    finally:
        await db.close()
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        resp = await staff.http.request(method, f"{staff.url}/api/audit", headers=staff.headers())
        assert resp.status == 405


async def test_no_deletion_while_finalizing(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    await archive.services.store.set_finalize(finished.recording_id, "finalizing", 10.0)
    body = await staff.call("DELETE", f"/api/recordings/{finished.recording_id}", expect=409)
    assert body["error"]["code"] == "busy"
    assert (archive.settings.recordings_dir / finished.recording_id).is_dir()


async def test_sessions_survive_a_restart_and_end_at_sign_out(
    finished: Finished, tmp_path: Path
) -> None:
    data = copy_of(finished, tmp_path / "data")
    async with serving(data) as server:
        await add_staff(server)
        async with signed_in(server) as staff:
            port = server.settings.port
            await server.close()
            async with serving(data, port=port) as again:
                assert (await staff.call("GET", "/api/staff/me"))["email"] == STAFF_EMAIL
                await staff.call("POST", "/api/staff/signout")
                resp = await staff.http.get(f"{again.url}/api/recordings")
                assert resp.status == 401


@pytest.mark.embedded_database
def test_staff_add_command(
    finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = copy_of(finished, tmp_path / "data")

    def run(*argv: str, password: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        return main([*argv, "--data-dir", str(data)])

    assert run("staff", "add", "Ana@Example.org", password="short") == 2
    assert run("staff", "add", "not-an-email", password=STAFF_PASSWORD) == 2
    assert run("staff", "add", "Ana@Example.org", password=STAFF_PASSWORD) == 0
    assert run("staff", "add", "ana@example.org", password=STAFF_PASSWORD) == 2
    assert run("staff", "password", "ana@example.org", password="another long password") == 0
    with sqlite3.connect(data / "storyroom.sqlite3") as conn:
        email, encoded = conn.execute("SELECT email, password_hash FROM staff_users").fetchone()
    assert email == "ana@example.org"
    assert encoded.startswith("scrypt$15$8$1$") and STAFF_PASSWORD not in encoded

    async def sign_in() -> tuple[int, int]:
        async with serving(data) as server, cookie_session() as http:
            old = await StaffBrowser(http, server.url).sign_in("ana@example.org")
            new = await StaffBrowser(http, server.url).sign_in(
                "ana@example.org", "another long password"
            )
            return old[0], new[0]

    assert asyncio.run(sign_in()) == (401, 200)


async def test_bearer_token_still_works_for_scripts(
    archive: RunningServer, finished: Finished
) -> None:
    async with aiohttp.ClientSession() as http:
        path = f"{archive.url}/api/recordings/{finished.recording_id}/metadata"
        resp = await http.patch(path, json={"location": "Ohio"}, headers=AUTH)
        assert resp.status == 200
        resp = await http.get(f"{archive.url}/api/audit?action=edit", headers=AUTH)
        assert [e["actor"] for e in (await resp.json())["entries"]] == ["staff token"]
        resp = await http.get(f"{archive.url}/api/staff/me", headers=AUTH)
        assert (await resp.json())["via"] == "token"
