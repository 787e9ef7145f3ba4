"""Every door tested shut: staff endpoints and pages without credentials, seat and copy
tokens where they do not belong, path traversal in file URLs, CSRF, security headers,
Socket.IO origins, repeated bad tokens, and secrets in logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import socketio

from storyroom.database import open_database
from support.archive import Finished, issue_copy_links
from support.server import (
    AUTH,
    STAFF_TOKEN,
    RunningServer,
    SeatClient,
    close_refused,
    create_session,
    refused_connect,
)
from support.staff import STAFF_EMAIL, STAFF_PASSWORD, StaffBrowser, cookie_session

REC = "rec_0000000000000000"
# (method, path) of every staff endpoint; {rec} is the real recording's id
STAFF_ENDPOINTS = [
    ("GET", "/api/sessions"),
    ("POST", "/api/sessions"),
    ("GET", "/api/sessions/ses_0000000000000000"),
    ("GET", "/api/recordings"),
    ("GET", "/api/recordings/{rec}"),
    ("GET", "/api/recordings/{rec}/files/master.wav"),
    ("HEAD", "/api/recordings/{rec}/files/master.wav"),
    ("PATCH", "/api/recordings/{rec}/metadata"),
    ("PUT", "/api/recordings/{rec}/consent"),
    ("DELETE", "/api/recordings/{rec}"),
    ("POST", "/api/recordings/{rec}/copies"),
    ("POST", "/api/copies/copy_0000000000000000/revoke"),
    ("POST", "/api/recordings/{rec}/exports"),
    ("GET", "/api/exports/bag_0000000000000000/bag.tar"),
    ("GET", "/api/audit"),
    ("GET", "/api/staff/me"),
    ("POST", "/api/staff/signout"),
    ("GET", "/api/applications"),
]
STAFF_PAGES = [
    "/staff",
    "/staff/recordings",
    "/staff/recordings/{rec}",
    "/staff/audit",
    "/staff/applications",
    "/staff/people",
]
CHANGING = [(m, p) for m, p in STAFF_ENDPOINTS if m in ("POST", "PUT", "PATCH", "DELETE")]


@pytest.fixture
def archive_settings() -> dict[str, Any]:
    # every wrong token below counts against 127.0.0.1: keep the limit out of the way
    return {"bad_token_limit": 1000}


def paths(finished: Finished, table: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(m, p.format(rec=finished.recording_id)) for m, p in table]


async def test_no_credentials_no_entry(archive: RunningServer, finished: Finished) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path in paths(finished, STAFF_ENDPOINTS):
            for headers in ({}, {"Authorization": "Bearer not-the-staff-token-at-all"}):
                async with http.request(
                    method, archive.url + path, json={}, headers=headers
                ) as resp:
                    assert resp.status == 401, (method, path, headers)
                    if method != "HEAD":
                        assert (await resp.json())["error"]["code"] == "unauthorized"
            # a cookie that is no session opens nothing either
            async with http.request(
                method, archive.url + path, headers={"Cookie": "storyroom_staff=made-up"}
            ) as resp:
                assert resp.status == 401, (method, path)
        for page in STAFF_PAGES:
            path = page.format(rec=finished.recording_id)
            async with http.get(archive.url + path, allow_redirects=False) as resp:
                assert resp.status == 303, path
                location = urlsplit(resp.headers["Location"])
                assert location.path == "/staff/signin"
                assert parse_qs(location.query) == {"next": [path]}
            async with http.get(archive.url + path) as resp:
                assert resp.status == 200 and resp.url.path == "/staff/signin"


async def test_seat_and_copy_tokens_open_nothing_else(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    other = await create_session(archive.url, title="Another conversation")
    tokens = [*finished.seat_tokens.values(), *(s["token"] for s in other["seats"].values())]
    tokens += [link["token"] for link in await issue_copy_links(staff, finished.recording_id)]
    async with aiohttp.ClientSession() as http:
        for token in tokens:
            bearer = {"Authorization": f"Bearer {token}"}
            for method, path in paths(finished, STAFF_ENDPOINTS):
                async with http.request(
                    method, archive.url + path, json={}, headers=bearer
                ) as resp:
                    assert resp.status == 401, (method, path)
            if token in finished.seat_tokens.values() or token in str(other):
                # a seat token is not a copy link
                async with http.get(f"{archive.url}/api/copy", headers=bearer) as resp:
                    assert resp.status == 401
    # a seat token seats its holder in its own session only
    client = SeatClient(archive.url, other["seats"]["a"]["token"])
    await client.connect()
    try:
        assert client.last["session"]["id"] == other["id"] and client.last["you"] == "a"
        assert finished.session_id not in str(client.snapshots)
        for event, payload in (
            (
                "consent",
                {"record": True, "archive": True, "public": True, "session": finished.session_id},
            ),
            ("question:cue", {"id": "warmup-1"}),
        ):
            ack = await client.call(event, payload)
            assert ack["ok"] is False, (event, ack)
    finally:
        await client.close()


TRAVERSALS = [
    "../../storyroom.sqlite3",
    "../../staff-token",
    "..%2F..%2Fstaff-token",
    "%2e%2e/%2e%2e/staff-token",
    "%2e%2e%2f%2e%2e%2fstoryroom.sqlite3",
    "..%252F..%252Fstaff-token",
    "stems/../../../staff-token",
    "stems/..%2F..%2F..%2Fstaff-token",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "....//....//staff-token",
    "..\\..\\staff-token",
    "master.wav%00.txt",
    "stems/a-01.opus.missing",
    "nope.wav",
    "stems",
    ".",
]


async def test_path_traversal_is_404_without_touching_other_files(
    archive: RunningServer, finished: Finished
) -> None:
    data = archive.settings.data_dir.resolve()
    own = (archive.settings.recordings_dir / finished.recording_id).resolve()
    (data / "staff-token").write_text("secret\n", encoding="utf-8")
    opened: list[str] = []
    watching = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if watching[0] and event == "open" and isinstance(args[0], str | Path):
            path = Path(args[0]).resolve() if args[0] else None
            if path is not None and (
                str(path).startswith("/etc")
                or (path.is_relative_to(data) and not path.is_relative_to(own))
            ):
                opened.append(str(path))

    sys.addaudithook(hook)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"{archive.url}/api/recordings/{finished.recording_id}/files/"
            for bad in TRAVERSALS:
                async with http.get(base + bad, headers=AUTH) as resp:
                    assert resp.status == 404, bad
                    assert "secret" not in await resp.text()
            for url in (
                f"{archive.url}/api/recordings/..%2F..%2Fstaff-token/files/master.wav",
                f"{archive.url}/api/recordings/{REC}/files/master.wav",
                f"{archive.url}/api/exports/..%2F{finished.recording_id}/bag.tar",
                f"{archive.url}/api/exports/..%2F..%2Fstaff-token/bag.tar",
                f"{archive.url}/static/..%2F..%2Fserver%2Fconfig.py",
                f"{archive.url}/static/%2e%2e/%2e%2e/pyproject.toml",
                f"{archive.url}/staff/recordings/..%2F..%2Fstaff-token",
            ):
                async with http.get(url, headers=AUTH, allow_redirects=False) as resp:
                    assert resp.status in (404, 303), url
                    assert "secret" not in await resp.text()
            # and the real file is served
            async with http.get(base + "master.wav", headers=AUTH) as resp:
                assert resp.status == 200 and await resp.read()
    finally:
        watching[0] = False
    assert opened == []


async def test_state_changing_requests_need_the_csrf_token(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    http = staff.http
    for method, path in paths(finished, CHANGING):
        url = archive.url + path
        for headers, kwargs in (
            ({}, {"json": {}}),
            ({"X-CSRF-Token": "wrong"}, {"json": {}}),
            ({"Origin": "http://evil.example"}, {"data": {"title": "x"}}),
            ({"X-CSRF-Token": staff.csrf, "Origin": "http://evil.example"}, {"json": {}}),
            ({"X-CSRF-Token": staff.csrf, "Origin": "null"}, {"json": {}}),
        ):
            async with http.request(method, url, headers=headers, **kwargs) as resp:
                assert resp.status == 403, (method, path, headers)
                assert (await resp.json())["error"]["code"] == "csrf_failed"
    # still signed in: the refused sign-out did nothing
    assert (await staff.call("GET", "/api/staff/me"))["email"] == STAFF_EMAIL
    rec = await staff.call("GET", f"/api/recordings/{finished.recording_id}")
    assert (
        rec["metadata"]["updated_at"] is None
        and (archive.settings.recordings_dir / finished.recording_id).is_dir()
    )
    # the sign-in form has its own token
    async with http.post(
        f"{archive.url}/api/staff/signin",
        json={"email": STAFF_EMAIL, "password": STAFF_PASSWORD},
    ) as resp:
        assert resp.status == 403
    # login CSRF from another site: the pre-session cookie is never sent there
    async with (
        cookie_session() as fresh,
        fresh.post(
            f"{archive.url}/api/staff/signin",
            data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD},
            headers={"Origin": "http://evil.example"},
        ) as resp,
    ):
        assert resp.status == 403


@pytest.mark.parametrize(
    ("archive_settings", "secure"),
    [({"public_url": ""}, False), ({"public_url": "https://stories.example.org"}, True)],
    ids=["http", "https"],
)
async def test_session_cookie_attributes(archive: RunningServer, secure: bool) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{archive.url}/api/staff/csrf")
        pre = (await resp.json())["csrf"]
        # a Secure cookie is not sent back over plain http: hand it over here
        resp = await http.post(
            f"{archive.url}/api/staff/signin",
            json={"email": STAFF_EMAIL, "password": STAFF_PASSWORD},
            headers={"X-CSRF-Token": pre, "Cookie": f"storyroom_csrf={pre}"},
        )
        assert resp.status == 200 and await resp.read()
        cookie = next(
            v for v in resp.headers.getall("Set-Cookie") if v.startswith("storyroom_staff=")
        )
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert {"httponly", "path", "samesite"} <= attributes
        assert "SameSite=Strict" in cookie
        assert ("secure" in attributes) is secure
        assert resp.headers["Cache-Control"] == "no-store"


async def test_security_headers_on_every_page(archive: RunningServer, finished: Finished) -> None:
    pages = [
        "/",
        "/staff/signin",
        "/staff",
        "/copy",
        "/room/ses_0000000000000000",
        "/console/ses_0000000000000000",
        "/apply",
        "/static/js/lib/ui.js",
        "/healthz",
        "/api/recordings",
        "/api/public/recordings",
        "/no/such/page",
        "/api/nothing",
    ]
    async with aiohttp.ClientSession() as http:
        for path in [*pages, f"/api/recordings/{finished.recording_id}/files/waveform.svg"]:
            resp = await http.get(archive.url + path, headers=AUTH, allow_redirects=False)
            await resp.read()
            csp = resp.headers.get("Content-Security-Policy", "")
            script = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
            assert "'self'" in script and "unsafe-inline" not in script, path
            assert "frame-ancestors 'none'" in csp, path
            assert "unsafe-inline" not in csp, path
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
            assert resp.headers.get("Referrer-Policy") == "no-referrer", path


async def test_socketio_refuses_foreign_origins(archive: RunningServer, finished: Finished) -> None:
    token = finished.seat_tokens["a"]
    client = socketio.AsyncClient(reconnection=False)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                archive.url,
                auth={"token": token},
                headers={"Origin": "http://evil.example"},
                transports=["websocket"],
                wait_timeout=5,
            )
    finally:
        await close_refused(client)
    ok = socketio.AsyncClient(reconnection=False)
    try:
        await ok.connect(
            archive.url,
            auth={"token": token},
            headers={"Origin": archive.url},
            transports=["websocket"],
            wait_timeout=5,
        )
        assert ok.connected
    finally:
        await ok.disconnect()
        await ok.shutdown()


@pytest.mark.parametrize("archive_settings", [{"bad_token_limit": 5, "signin_rate_limit": 3}])
async def test_repeated_bad_tokens_are_slowed_down(
    archive: RunningServer, finished: Finished
) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{archive.url}/api/recordings"
        for _ in range(5):
            resp = await http.get(url, headers={"Authorization": "Bearer guess-guess-guess"})
            assert resp.status == 401 and await resp.read()
        for headers in ({"Authorization": "Bearer guess-guess-guess"}, AUTH):
            resp = await http.get(url, headers=headers)
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) > 60
            assert (await resp.json())["error"]["code"] == "rate_limited"
        # copy links and seat links share the budget of that address
        resp = await http.get(
            f"{archive.url}/api/copy", headers={"Authorization": "Bearer " + "x" * 32}
        )
        assert resp.status == 429 and await resp.read()
    error = await refused_connect(archive.url, {"token": finished.seat_tokens["a"]})
    assert error["data"]["code"] == "rate_limited"
    # sign-in: at most 3 attempts per address in 15 minutes, right password or not
    async with cookie_session() as http:
        staff = StaffBrowser(http, archive.url)
        statuses = [(await staff.sign_in(password="wrong password!"))[0] for _ in range(3)]
        statuses.append((await staff.sign_in())[0])
        assert statuses == [401, 401, 401, 429]


@pytest.mark.parametrize("archive_settings", [{"bad_token_limit": 3}])
async def test_seat_tokens_at_connect_are_counted(
    archive: RunningServer, finished: Finished
) -> None:
    codes = []
    for token in ["w" * 32] * 3 + [finished.seat_tokens["a"]]:
        codes.append((await refused_connect(archive.url, {"token": token}))["data"]["code"])
    assert codes == ["token_invalid"] * 3 + ["rate_limited"]


async def test_logs_reveal_no_tokens_or_passwords(
    archive: RunningServer, finished: Finished, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [STAFF_TOKEN, STAFF_PASSWORD, *finished.seat_tokens.values()]
    async with cookie_session() as http:
        staff = StaffBrowser(http, archive.url)
        await staff.sign_in(password="a wrong password 123")
        await staff.sign_in()
        secrets += [staff.csrf, *(c.value for c in http.cookie_jar)]
        rec = f"/api/recordings/{finished.recording_id}"
        copy_tokens = [
            link["token"] for link in await issue_copy_links(staff, finished.recording_id)
        ]
        secrets += copy_tokens
        await http.get(
            f"{archive.url}/api/copy/file", headers={"Authorization": f"Bearer {copy_tokens[0]}"}
        )
        await http.get(f"{archive.url}{rec}", headers=AUTH)
        await http.get(
            f"{archive.url}{rec}", headers={"Authorization": "Bearer wrong-token-123456"}
        )
        await staff.call("POST", "/api/staff/signout")
    client = SeatClient(archive.url, finished.seat_tokens["a"])
    await client.connect()
    await client.close()
    assert "GET /api/copy/file" in caplog.text  # the access log was captured
    for secret in secrets:
        assert secret and secret not in caplog.text
    db = await open_database(archive.settings.database)
    try:
        audit = str(await db.fetch_all("SELECT * FROM audit_log"))
    finally:
        await db.close()
    assert "sign_in_failed" in audit
    for secret in secrets:
        assert secret not in audit
