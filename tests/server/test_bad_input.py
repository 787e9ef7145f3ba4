"""Table-driven bad input at every boundary: each gets a clear code, nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from storyroom.__main__ import demo_session
from support.server import (
    AUTH,
    STAFF_TOKEN,
    RunningServer,
    SeatClient,
    create_session,
    seated,
)


def people(a: Any = None, b: Any = None) -> list[Any]:
    return [a or {"name": "Rosa", "bio": "x"}, b or {"name": "Dale", "bio": "y"}]


BAD_SESSIONS: list[tuple[str, Any, int, str]] = [
    ("not an object", [1, 2], 400, "invalid_type"),
    (
        "missing title",
        {k: v for k, v in demo_session().items() if k != "title"},
        400,
        "missing_field",
    ),
    ("unknown field", demo_session(extra=1), 400, "unknown_field"),
    ("title wrong type", demo_session(title=5), 400, "invalid_type"),
    ("title empty", demo_session(title="   "), 400, "invalid_value"),
    ("title too long", demo_session(title="t" * 121), 400, "too_long"),
    ("language fr", demo_session(language="fr"), 400, "invalid_value"),
    ("target too small", demo_session(target_minutes=2), 400, "invalid_value"),
    ("target too big", demo_session(target_minutes=1000), 400, "invalid_value"),
    ("target float", demo_session(target_minutes=40.5), 400, "invalid_type"),
    ("target bool", demo_session(target_minutes=True), 400, "invalid_type"),
    ("one participant", demo_session(participants=people()[:1]), 400, "invalid_value"),
    ("participants not list", demo_session(participants="Rosa"), 400, "invalid_value"),
    (
        "participant no name",
        demo_session(participants=people({"bio": "x"})),
        400,
        "missing_field",
    ),
    (
        "participant name too long",
        demo_session(participants=people({"name": "n" * 41})),
        400,
        "too_long",
    ),
    (
        "participant bio too long",
        demo_session(participants=people(None, {"name": "D", "bio": "b" * 501})),
        400,
        "too_long",
    ),
    (
        "participant last name field",
        demo_session(participants=people({"name": "R", "last_name": "S"})),
        400,
        "unknown_field",
    ),
    (
        "control characters",
        demo_session(participants=people({"name": "R\x00"})),
        400,
        "invalid_value",
    ),
    (
        "facilitator missing",
        {k: v for k, v in demo_session().items() if k != "facilitator"},
        400,
        "missing_field",
    ),
    ("facilitator not object", demo_session(facilitator="Sam"), 400, "invalid_type"),
    ("questions empty", demo_session(questions=[]), 400, "invalid_value"),
    ("questions wrong type", demo_session(questions=[1]), 400, "invalid_type"),
    ("question too long", demo_session(questions=["q" * 401]), 400, "too_long"),
]


async def session_count(http: aiohttp.ClientSession, url: str) -> int:
    resp = await http.get(f"{url}/api/sessions", headers=AUTH)
    return len((await resp.json())["sessions"])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    ("why", "body", "status", "code"), BAD_SESSIONS, ids=[b[0] for b in BAD_SESSIONS]
)
async def test_bad_session_bodies(
    server: RunningServer, http: aiohttp.ClientSession, why: str, body: Any, status: int, code: str
) -> None:
    resp = await http.post(f"{server.url}/api/sessions", json=body, headers=AUTH)
    answer = await resp.json()
    assert resp.status == status, answer
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert await session_count(http, server.url) == 0


RAW_BODIES: list[tuple[str, bytes, str, int, str]] = [
    ("not json", b"{nope", "application/json", 400, "invalid_json"),
    ("not utf-8", b"\xff\xfe{", "application/json", 400, "invalid_json"),
    (
        "form encoded",
        b"title=x",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    ("oversize", b'{"title": "' + b"x" * 70_000 + b'"}', "application/json", 413, "too_large"),
]


@pytest.mark.parametrize(
    ("why", "raw", "ctype", "status", "code"), RAW_BODIES, ids=[r[0] for r in RAW_BODIES]
)
async def test_bad_raw_bodies(
    server: RunningServer,
    http: aiohttp.ClientSession,
    why: str,
    raw: bytes,
    ctype: str,
    status: int,
    code: str,
) -> None:
    resp = await http.post(
        f"{server.url}/api/sessions", data=raw, headers={**AUTH, "Content-Type": ctype}
    )
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code


STAFF_ROUTES = [
    ("POST", "/api/sessions"),
    ("GET", "/api/sessions"),
    ("GET", "/api/sessions/ses_0000000000000000"),
]
BAD_AUTH = [
    None,
    "Bearer",
    "Bearer wrong-token",
    f"Basic {STAFF_TOKEN}",
    f"Bearer {STAFF_TOKEN}x",
]


@pytest.mark.parametrize(("method", "path"), STAFF_ROUTES)
@pytest.mark.parametrize("header", BAD_AUTH)
async def test_staff_routes_need_staff_token(
    server: RunningServer, http: aiohttp.ClientSession, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await http.request(method, server.url + path, json=demo_session(), headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_seat_token_does_not_open_staff_routes(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    created = await create_session(server.url)
    seat_token = created["seats"]["facilitator"]["token"]
    resp = await http.get(
        f"{server.url}/api/sessions/{created['id']}",
        headers={"Authorization": f"Bearer {seat_token}"},
    )
    assert resp.status == 401


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/sessions/ses_doesnotexist00", 404, "not_found"),
        ("/api/sessions/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        ("/api/nothing-here", 404, "not_found"),
    ],
)
async def test_unknown_http_paths(
    server: RunningServer, http: aiohttp.ClientSession, path: str, status: int, code: str
) -> None:
    resp = await http.get(server.url + path, headers=AUTH)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code


async def test_wrong_method(server: RunningServer, http: aiohttp.ClientSession) -> None:
    resp = await http.delete(f"{server.url}/api/sessions", headers=AUTH)
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_healthz(server: RunningServer, http: aiohttp.ClientSession) -> None:
    resp = await http.get(f"{server.url}/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


# -- Socket.IO events ------------------------------------------------------------------

GOOD_CONSENT = {"record": True, "archive": False, "public": False}

# (seat, event, payload, expected code)
BAD_EVENTS: list[tuple[str, str, Any, str]] = [
    ("a", "consent", None, "invalid_type"),
    ("a", "consent", "yes", "invalid_type"),
    ("a", "consent", {"record": True}, "missing_field"),
    ("a", "consent", {**GOOD_CONSENT, "extra": 1}, "unknown_field"),
    ("a", "consent", {**GOOD_CONSENT, "record": "true"}, "invalid_type"),
    ("a", "consent", {**GOOD_CONSENT, "record": 1}, "invalid_type"),
    ("facilitator", "consent", GOOD_CONSENT, "forbidden"),
    ("a", "consent", {"record": True, "archive": True, "public": "x" * 200_000}, "too_large"),
    ("a", "questions:choose", {"ids": "warmup-1"}, "invalid_type"),
    ("a", "questions:choose", {"ids": ["no-such-question"]}, "unknown_question"),
    ("a", "questions:choose", {"ids": ["warmup-1", "warmup-1"]}, "invalid_value"),
    ("a", "questions:choose", {"ids": ["../../etc"]}, "invalid_value"),
    ("a", "questions:choose", {"ids": [None]}, "invalid_value"),
    ("a", "questions:choose", {"ids": ["q"] * 61}, "invalid_type"),
    ("a", "questions:choose", {}, "missing_field"),
    ("a", "question:cue", {"id": "warmup-1"}, "forbidden"),
    ("facilitator", "question:cue", {"id": "warmup-1"}, "invalid_state"),
    ("facilitator", "question:cue", {"id": "nope"}, "unknown_question"),
    ("facilitator", "question:cue", {"id": 3}, "invalid_value"),
    ("facilitator", "question:cue", {}, "missing_field"),
    ("a", "recording:start", None, "forbidden"),
    ("b", "recording:stop", None, "forbidden"),
    ("facilitator", "recording:start", None, "precondition_failed"),
    ("facilitator", "recording:start", {"now": True}, "unknown_field"),
    ("facilitator", "recording:stop", None, "invalid_state"),
    ("facilitator", "recording:pause", None, "invalid_state"),
    ("facilitator", "recording:resume", None, "invalid_state"),
    ("facilitator", "marker", {"label": "x"}, "invalid_state"),
    ("facilitator", "marker", {"label": ""}, "invalid_value"),
    ("facilitator", "marker", {"label": "l" * 121}, "too_long"),
    ("facilitator", "marker", {"label": 7}, "invalid_type"),
    ("a", "marker", {"label": "x"}, "forbidden"),
    ("a", "rtc:offer", {"sdp": 5, "type": "offer"}, "invalid_type"),
    ("a", "rtc:offer", {"sdp": "v=0", "type": "answer"}, "invalid_value"),
    ("a", "rtc:offer", {"sdp": "v=0"}, "missing_field"),
    ("a", "rtc:offer", {"sdp": "v" * 70_000, "type": "offer"}, "sdp_too_large"),
]


@pytest.fixture
async def room(server: RunningServer) -> AsyncIterator[dict[str, SeatClient]]:
    async with seated(server.url, await create_session(server.url)) as clients:
        yield clients


def state_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    keep = ("seats", "agreed", "cue", "cues", "markers", "recording")
    return {k: snapshot[k] for k in keep}


@pytest.mark.parametrize(
    ("seat", "event", "payload", "code"),
    BAD_EVENTS,
    ids=[f"{e[1]}-{e[3]}-{i}" for i, e in enumerate(BAD_EVENTS)],
)
async def test_bad_events(
    room: dict[str, SeatClient],
    server: RunningServer,
    seat: str,
    event: str,
    payload: Any,
    code: str,
) -> None:
    client = room[seat]
    await client.wait(lambda s: all(v["connected"] for v in s["seats"].values()), "all seated")
    before = state_of(room["facilitator"].last)
    counts = {seat: len(c.snapshots) for seat, c in room.items()}
    ack = await client.call(event, payload)
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == code, ack
    assert ack["error"]["message"]
    # nothing changed: no seat got a new snapshot (a change is broadcast before its ack)
    assert {seat: len(c.snapshots) for seat, c in room.items()} == counts
    assert state_of(room["facilitator"].last) == before
    # and the connection stays usable
    assert client.sio.connected
    assert (await client.call("questions:choose", {"ids": []}))["ok"]


async def test_unknown_event_is_ignored(room: dict[str, SeatClient]) -> None:
    client = room["a"]
    await client.sio.emit("launch:missiles", {"now": True})
    await client.sio.emit("room", {"fake": "snapshot"})
    assert (await client.call("consent", GOOD_CONSENT))["ok"]
    assert client.sio.connected


async def test_consent_locked_once_recording(room: dict[str, SeatClient]) -> None:
    for seat in ("a", "b"):
        assert (await room[seat].call("consent", GOOD_CONSENT))["ok"]
    assert (await room["facilitator"].call("recording:start"))["ok"]
    ack = await room["a"].call("consent", {**GOOD_CONSENT, "record": False})
    assert ack["error"]["code"] == "invalid_state"
    assert room["facilitator"].last["seats"]["a"]["consent"]["record"] is True


async def test_another_sessions_token_sees_only_its_own_room(server: RunningServer) -> None:
    first = await create_session(server.url)
    second = await create_session(server.url, title="Other")
    client = SeatClient(server.url, second["seats"]["a"]["token"])
    await client.connect()
    try:
        assert client.last["session"]["id"] == second["id"]
        assert client.last["session"]["title"] == "Other"
        assert first["id"] not in str(client.snapshots)
    finally:
        await client.close()


async def test_huge_frame_closes_only_that_connection(room: dict[str, SeatClient]) -> None:
    # Above engine.io's 1 MiB cap the sender is a protocol violator: it is disconnected.
    await room["b"].sio.emit(
        "consent", {"record": True, "archive": True, "public": "x" * 1_200_000}
    )
    await room["facilitator"].wait(lambda s: not s["seats"]["b"]["connected"], "b dropped")
    assert room["a"].sio.connected
    assert (await room["a"].call("consent", GOOD_CONSENT))["ok"]
