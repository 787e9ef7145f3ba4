"""Self-guided conversations: two people who know each other, no facilitator, either of
them running the room. Real server on loopback, real Socket.IO clients, real aiortc
peers, the server's own finalizer."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.__main__ import demo_session
from storyroom.ids import hash_token, new_token
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.seats import SessionKind
from storyroom.store import MIGRATIONS, Store
from support.media import dominant_frequency, tone_room
from support.polling import wait_for, wait_until
from support.server import (
    RunningServer,
    call,
    close_clients,
    create_self_guided,
    create_session,
    finalized,
    give_consent,
    refused_connect,
    seat_clients,
    seated,
    serving,
)

ALL_CONSENT = {"record": True, "archive": True, "public": False}


async def test_two_seats_run_the_whole_conversation_and_it_is_finalized(
    server: RunningServer,
) -> None:
    created = await create_self_guided(server.url, title="Kitchen table")
    assert created["kind"] == "self_guided"
    assert set(created["seats"]) == {"a", "b"}
    assert all("/together/" in seat["url"] for seat in created["seats"].values())
    async with tone_room(server.url, created, seats=("a", "b")) as (clients, peers):
        a, b = clients["a"], clients["b"]
        snap = await a.wait(lambda s: s["seats"]["b"]["connected"], "both seated")
        assert snap["session"]["kind"] == "self_guided"
        assert set(snap["seats"]) == {"a", "b"}
        assert snap["timer"]["limit_s"] == 3600
        await give_consent(clients, ALL_CONSENT)
        questions = [q["id"] for q in a.last["questions"]]

        start = await b.call("recording:start")
        assert start["ok"], start
        rec_id = start["recording"]["id"]
        begun = time.monotonic()
        assert (await a.call("question:cue", {"id": questions[0]}))["ok"]
        await wait_until(begun + 1.0)
        assert (await b.call("question:cue", {"id": questions[1]}))["ok"]
        assert (await b.call("recording:pause"))["ok"]
        assert (await a.call("marker", {"label": "we laughed"}))["ok"]
        assert (await a.call("recording:resume"))["ok"]
        await wait_until(time.monotonic() + 1.0)
        # each hears the other, forwarded by the server with no third seat in the room
        for seat, other in (("a", "b"), ("b", "a")):
            await wait_for(
                lambda seat=seat, other=other: len(peers[seat].samples_from(other)) > 24_000,
                what=f"{seat} hears {other}",
            )
            heard = peers[seat].samples_from(other, 0.5)
            assert dominant_frequency(heard) == pytest.approx(
                {"a": 440.0, "b": 660.0}[other], abs=10
            )
        assert (await a.call("recording:stop"))["ok"]
        for client in clients.values():
            done = await client.wait(lambda s: s["recording"]["state"] == "stopped", "stopped")
            assert [c["question_id"] for c in done["cues"]] == questions[:2]
            assert [m["label"] for m in done["markers"]] == ["we laughed"]
            assert done["markers"][0]["seat"] == "a"

    rec = await finalized(server.url, rec_id)
    assert rec["kind"] == "self_guided"
    assert set(rec["people"]) == {"a", "b"}
    names = {f["name"] for f in rec["files"]}
    assert {"stems/a.flac", "stems/b.flac", "master.wav", "metadata.json"} <= names
    assert "stems/facilitator.flac" not in names
    assert len(rec["chapters"]) == 2
    rec_dir = server.settings.recordings_dir / rec_id
    metadata = json.loads((rec_dir / "metadata.json").read_text())
    assert metadata["kind"] == "self_guided"
    assert set(metadata["seats"]) == {"a", "b"}
    assert [c["question_id"] for c in metadata["cues"]] == questions[:2]

    async with aiohttp.ClientSession() as http:
        described = await call(http, "GET", f"{server.url}/api/sessions/{created['id']}")
        assert described["kind"] == "self_guided"
        assert set(described["seats"]) == {"a", "b"}
        listed = await call(http, "GET", f"{server.url}/api/sessions")
        mine = next(s for s in listed["sessions"] if s["id"] == created["id"])
        assert mine["kind"] == "self_guided"
        export = await call(
            http, "POST", f"{server.url}/api/recordings/{rec_id}/exports", expect=201
        )
        # a copy for each of the two, once both agree to copies
        path = f"{server.url}/api/recordings/{rec_id}"
        for seat in ("a", "b"):
            body = {"seat": seat, "copies": True, "note": "yes"}
            await call(http, "PUT", f"{path}/consent", body)
        copies = await call(http, "POST", f"{path}/copies", expect=201)
        assert sorted(link["seat"] for link in copies["links"]) == ["a", "b"]
    bag_info = next((server.settings.data_dir / "exports").rglob("bag-info.txt")).read_text()
    assert "Conversation-Kind: self_guided" in bag_info
    assert "self-guided One Small Step conversation" in bag_info
    assert export["export"]["id"]


async def test_the_hard_limit_stops_the_recording(tmp_path: Path) -> None:
    # 0.02 minutes: 1.2 s of recorded time, pauses excluded
    async with serving(tmp_path, self_guided_limit_minutes="0.02") as srv:
        created = await create_self_guided(srv.url)
        async with seated(srv.url, created, ("a", "b")) as clients:
            await give_consent(clients, ALL_CONSENT)
            before = time.monotonic()
            assert (await clients["a"].call("recording:start"))["ok"]
            assert (await clients["a"].call("recording:pause"))["ok"]
            paused_at = time.monotonic()
            await wait_until(paused_at + 1.5)  # longer than the limit, but paused
            assert clients["b"].last["recording"]["state"] == "paused"
            assert (await clients["b"].call("recording:resume"))["ok"]
            resumed = time.monotonic()
            snap = await clients["b"].wait(
                lambda s: s["recording"]["state"] == "stopped", "stopped at the limit", timeout=15
            )
            seen = time.monotonic()
            assert snap["recording"]["stop_reason"] == "time_limit"
            notices = [s["notice"] for s in clients["b"].snapshots if s["notice"]]
            assert {"type": "recording", "state": "stopped", "reason": "time_limit"}.items() <= (
                next(n for n in notices if n.get("reason")).items()
            )
            elapsed = snap["timer"]["elapsed_s"]
            assert 1.2 <= elapsed <= 1.2 + (paused_at - before) + (seen - resumed)
            # the conversation is over: no new take
            assert (await clients["a"].call("recording:start"))["error"]["code"] == "invalid_state"


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("question:cue", "cue"),
        ("marker", {"label": "x"}),
        ("recording:start", None),
        ("recording:pause", None),
        ("recording:resume", None),
        ("recording:stop", None),
    ],
)
async def test_a_participant_of_a_facilitated_room_still_cannot_run_it(
    server: RunningServer, event: str, payload: Any
) -> None:
    created = await create_session(server.url)
    async with seated(server.url, created) as clients:
        await give_consent(clients, ALL_CONSENT)
        assert (await clients["facilitator"].call("recording:start"))["ok"]
        if payload == "cue":
            payload = {"id": clients["a"].last["questions"][0]["id"]}
        for seat in ("a", "b"):
            ack = await clients[seat].call(event, payload)
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden", (seat, ack)
        snap = clients["facilitator"].last
        assert snap["recording"]["state"] == "recording"
        assert snap["cues"] == [] and snap["markers"] == []


async def test_notes_stay_the_facilitators(server: RunningServer) -> None:
    created = await create_self_guided(server.url)
    async with seated(server.url, created, ("a", "b")) as clients:
        ack = await clients["a"].call("note", {"text": "private?"})
        assert ack["error"]["code"] == "forbidden"


async def test_start_needs_both_seats_and_both_consents(server: RunningServer) -> None:
    created = await create_self_guided(server.url)
    async with seated(server.url, created, ("a",)) as alone:
        await give_consent(alone, ALL_CONSENT)
        ack = await alone["a"].call("recording:start")
        assert ack["error"]["code"] == "precondition_failed"
        assert "Dale" in ack["error"]["message"]
    async with seated(server.url, created, ("a", "b")) as clients:
        # b has not consented: neither seat may start
        for seat in ("a", "b"):
            ack = await clients[seat].call("recording:start")
            assert ack["error"]["code"] == "precondition_failed", ack
            assert "Dale" in ack["error"]["message"]
        assert (await clients["b"].call("consent", {**ALL_CONSENT, "record": False}))["ok"]
        ack = await clients["a"].call("recording:start")
        assert ack["error"]["code"] == "precondition_failed"
        assert clients["a"].last["recording"]["state"] == "idle"


async def test_a_third_connection_adds_no_seat(server: RunningServer) -> None:
    created = await create_self_guided(server.url)
    async with seated(server.url, created, ("a", "b")) as clients:
        # a second window on a's link replaces the first; the room keeps two seats
        again = await seat_clients(server.url, created, ("a",))
        try:
            await wait_for(lambda: clients["a"].closed, what="the first window closed")
            assert clients["a"].closed[0]["reason"] == "replaced"
            snap = await again["a"].wait(lambda s: s["seats"]["b"]["connected"], "seated")
            assert set(snap["seats"]) == {"a", "b"}
            assert snap["seats"]["a"]["connections"] == 2
        finally:
            await close_clients(again)
        # no link opens a third seat
        for auth, code in (({"token": new_token()}, "token_invalid"), ({}, "token_missing")):
            refused = await refused_connect(server.url, auth)
            assert refused["data"]["code"] == code


@pytest.mark.embedded_database
async def test_a_facilitator_seat_never_opens_a_self_guided_room(server: RunningServer) -> None:
    created = await create_self_guided(server.url)
    session_id = created["id"]
    async with aiohttp.ClientSession() as http:
        refused = await call(
            http,
            "POST",
            f"{server.url}/api/sessions/{session_id}/seats/facilitator/reissue",
            expect=400,
        )
        assert refused["error"]["code"] == "invalid_value"
    # a facilitator's row in a self-guided session (written by hand) opens nothing
    token = new_token()
    with sqlite3.connect(server.settings.database_path) as db:
        db.execute(
            "INSERT INTO seats (session_id, seat, name, bio, token_hash, token_expires_at)"
            " VALUES (?, 'facilitator', 'Sam', '', ?, ?)",
            (session_id, hash_token(token), time.time() + 3600),
        )
    refused = await refused_connect(server.url, {"token": token})
    assert refused["data"]["code"] == "seat_not_in_room"
    async with seated(server.url, created, ("a",)) as clients:
        assert set(clients["a"].last["seats"]) == {"a", "b"}


@pytest.mark.parametrize(
    ("other_kind", "seat", "event", "code"),
    [
        ("self_guided", "a", "question:cue", "invalid_state"),
        ("facilitated", "a", "question:cue", "forbidden"),
        ("facilitated", "facilitator", "question:cue", "invalid_state"),
        ("self_guided", "b", "recording:stop", "invalid_state"),
        ("facilitated", "b", "recording:stop", "forbidden"),
        ("facilitated", "facilitator", "recording:stop", "invalid_state"),
        ("self_guided", "a", "recording:pause", "invalid_state"),
        ("self_guided", "a", "marker", "invalid_state"),
    ],
)
async def test_a_seat_of_another_session_cannot_touch_this_room(
    server: RunningServer, other_kind: str, seat: str, event: str, code: str
) -> None:
    created = await create_self_guided(server.url)
    other = (
        await create_self_guided(server.url)
        if other_kind == "self_guided"
        else await create_session(server.url)
    )
    async with seated(server.url, created, ("a", "b")) as clients:
        await give_consent(clients, ALL_CONSENT)
        assert (await clients["a"].call("recording:start"))["ok"]
        async with seated(server.url, other, (seat,)) as intruder:
            question = clients["a"].last["questions"][0]["id"]
            payload = {"question:cue": {"id": question}, "marker": {"label": "x"}}.get(event)
            ack = await intruder[seat].call(event, payload)
            assert ack["ok"] is False and ack["error"]["code"] == code, ack
            assert intruder[seat].last["session"]["id"] == other["id"]
        snap = clients["b"].last
        assert snap["recording"]["state"] == "recording"
        assert snap["cues"] == [] and snap["markers"] == []


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("recording:start", {"now": True}, "unknown_field"),
        ("recording:stop", [], "invalid_type"),
        ("question:cue", {}, "missing_field"),
        ("question:cue", {"id": "no-such-question"}, "unknown_question"),
        ("question:cue", {"id": 7}, "invalid_value"),
        ("marker", {"label": "x" * 121}, "too_long"),
    ],
)
async def test_bad_payloads_are_refused_in_a_self_guided_room(
    server: RunningServer, event: str, payload: Any, code: str
) -> None:
    created = await create_self_guided(server.url)
    async with seated(server.url, created, ("a", "b")) as clients:
        await give_consent(clients, ALL_CONSENT)
        assert (await clients["b"].call("recording:start"))["ok"]
        ack = await clients["a"].call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == code, ack
        assert clients["a"].sio.connected
        assert clients["b"].last["recording"]["state"] == "recording"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"kind": "solo"}, "invalid_value"),
        ({"kind": 3}, "invalid_type"),
        ({"kind": "self_guided"}, "invalid_value"),  # with the demo's facilitator
        ({"facilitator": None}, "invalid_type"),  # facilitated without one
    ],
)
async def test_bad_session_kinds_are_refused(
    server: RunningServer, changes: dict[str, Any], code: str
) -> None:
    async with aiohttp.ClientSession() as http:
        refused = await call(
            http, "POST", f"{server.url}/api/sessions", demo_session(**changes), expect=400
        )
    assert refused["error"]["code"] == code


async def test_a_missing_facilitator_is_refused_for_a_facilitated_session(
    server: RunningServer,
) -> None:
    payload = demo_session()
    payload.pop("facilitator")
    async with aiohttp.ClientSession() as http:
        refused = await call(http, "POST", f"{server.url}/api/sessions", payload, expect=400)
    assert refused["error"] == {
        "code": "missing_field",
        "message": "missing field 'facilitator' in session",
    }


async def test_sessions_of_an_older_database_stay_facilitated(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    before = next(i for i, script in enumerate(MIGRATIONS) if "ADD COLUMN kind" in script)
    with sqlite3.connect(path) as db:
        for number, script in enumerate(MIGRATIONS[:before], start=1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        db.execute(
            "INSERT INTO sessions (id, title, language, target_minutes, questions, agreed,"
            " created_at) VALUES ('ses_0123456789abcdef', 'Old', 'en', 40, '[]', '[]', 1.0)"
        )
    store = await Store.open(path)
    try:
        old = await store.get_session("ses_0123456789abcdef", EVERY_ORGANISATION)
        assert old is not None and old.kind is SessionKind.FACILITATED
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()
