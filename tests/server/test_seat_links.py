"""Seat links that work on the day: a scheduled session's links expire a grace after its
start (not after their creation), and staff can reissue a seat's link: the old token is
refused at once, the new one opens the seat, and the reissue is audited."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.__main__ import demo_session
from support.polling import wait_for, wait_until
from support.server import (
    RunningServer,
    SeatClient,
    call,
    create_session,
    refused_connect,
    serving,
)

GRACE_HOURS = 48.0  # the default STORYROOM_TOKEN_GRACE_HOURS


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def test_scheduled_links_outlive_the_creation_rule(tmp_path: Path) -> None:
    # Today's rule alone (a ~9 ms lifetime here) would expire these links at once.
    async with serving(tmp_path, token_ttl_days="0.0000001") as srv:
        starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20)
        created = await create_session(srv.url, starts_at=iso(starts))
        async with aiohttp.ClientSession() as http:
            described = await call(http, "GET", f"{srv.url}/api/sessions/{created['id']}")
        assert described["starts_at"] == starts.timestamp()
        expected = starts.timestamp() + GRACE_HOURS * 3600
        for seat in ("a", "b", "facilitator"):
            assert described["seats"][seat]["token_expires_at"] == pytest.approx(expected)
        client = SeatClient(srv.url, created["seats"]["a"]["token"])
        await client.connect()
        try:
            assert client.last["you"] == "a"
        finally:
            await client.close()
        # without a schedule, today's rule: gone after ~9 ms
        unscheduled = await create_session(srv.url)
        await wait_until(time.time() + 0.0000001 * 86400, clock=time.time)
        error = await refused_connect(srv.url, {"token": unscheduled["seats"]["b"]["token"]})
        assert error["data"]["code"] == "token_expired"


async def test_expired_link_is_refused_and_a_reissued_one_works(server: RunningServer) -> None:
    url = server.url
    past = datetime.now(UTC) - timedelta(hours=GRACE_HOURS + 1)
    created = await create_session(url, starts_at=iso(past))
    old = created["seats"]["b"]["token"]
    error = await refused_connect(url, {"token": old})
    assert error["data"]["code"] == "token_expired"

    async with aiohttp.ClientSession() as http:
        before = time.time()
        fresh = await call(
            http, "POST", f"{url}/api/sessions/{created['id']}/seats/b/reissue", expect=201
        )
        assert fresh["seat"] == "b" and fresh["token"] != old
        assert fresh["url"].endswith(f"/room/{created['id']}#token={fresh['token']}")
        # reissued after the start: still a full grace from now
        assert fresh["expires_at"] >= before + GRACE_HOURS * 3600
        entries = (await call(http, "GET", f"{url}/api/audit?action=seat_link_reissued"))["entries"]
        assert [(e["target"], e["detail"]) for e in entries] == [
            (created["id"], {"seat": "b", "closed": 0})
        ]

    client = SeatClient(url, fresh["token"])
    await client.connect()
    try:
        assert client.last["you"] == "b"
    finally:
        await client.close()
    # the old token opens nothing any more: it is not a token of any seat now
    error = await refused_connect(url, {"token": old})
    assert error["data"]["code"] == "token_invalid"


async def test_a_working_link_stops_at_once_when_reissued(server: RunningServer) -> None:
    url = server.url
    created = await create_session(url)
    old = created["seats"]["facilitator"]["token"]
    first = SeatClient(url, old)
    await first.connect()
    try:
        async with aiohttp.ClientSession() as http:
            fresh = await call(
                http,
                "POST",
                f"{url}/api/sessions/{created['id']}/seats/facilitator/reissue",
                {},
                expect=201,
            )
            entries = await call(http, "GET", f"{url}/api/audit?action=seat_link_reissued")
        # whoever was in the room on the old link is told why and let go
        await wait_for(lambda: not first.sio.connected, what="the old link's connection closed")
        assert [c["reason"] for c in first.closed] == ["link_reissued"]
        assert entries["entries"][0]["detail"] == {"seat": "facilitator", "closed": 1}
    finally:
        await first.close()
    assert "/console/" in fresh["url"]
    error = await refused_connect(url, {"token": old})
    assert error["data"]["code"] == "token_invalid"
    # the other seats keep their links
    other = SeatClient(url, created["seats"]["a"]["token"])
    await other.connect()
    await other.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("seats/c/reissue", None, 400, "invalid_value"),
        ("seats/A/reissue", None, 400, "invalid_value"),
        ("seats/a/reissue", {"seat": "a"}, 400, "unknown_field"),
        ("seats/a/reissue", ["a"], 400, "invalid_type"),
        ("seats/a/reissue", "a", 400, "invalid_type"),
    ],
)
async def test_reissue_refuses_bad_input(
    server: RunningServer, path: str, body: Any, status: int, code: str
) -> None:
    created = await create_session(server.url)
    async with aiohttp.ClientSession() as http:
        answer = await call(
            http, "POST", f"{server.url}/api/sessions/{created['id']}/{path}", body, expect=status
        )
    assert answer["error"]["code"] == code and answer["error"]["message"]
    # nothing changed: the seat's link still works
    client = SeatClient(server.url, created["seats"]["a"]["token"])
    await client.connect()
    await client.close()


@pytest.mark.parametrize(
    ("session_id", "staff", "status", "code"),
    [
        ("ses_nosuchsession", True, 404, "not_found"),
        ("bad%20id!", True, 404, "not_found"),
        (None, False, 401, "unauthorized"),
    ],
)
async def test_reissue_refuses_unknown_sessions_and_strangers(
    server: RunningServer, session_id: str | None, staff: bool, status: int, code: str
) -> None:
    if session_id is None:
        session_id = (await create_session(server.url))["id"]
    async with aiohttp.ClientSession() as http:
        answer = await call(
            http,
            "POST",
            f"{server.url}/api/sessions/{session_id}/seats/a/reissue",
            staff=staff,
            expect=status,
        )
    assert answer["error"]["code"] == code


@pytest.mark.parametrize(
    "starts_at",
    ["tomorrow", "2026-12-10T18:00:00", "2026-13-10T18:00:00+00:00", 1765390000, "", "9" * 80],
)
async def test_session_start_must_be_a_moment_with_its_offset(
    server: RunningServer, starts_at: Any
) -> None:
    async with aiohttp.ClientSession() as http:
        answer = await call(
            http,
            "POST",
            f"{server.url}/api/sessions",
            {**demo_session(), "starts_at": starts_at},
            expect=400,
        )
    assert answer["error"]["code"] == "invalid_time"
    assert "starts_at" in answer["error"]["message"]
