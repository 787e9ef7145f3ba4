"""Full room flow over real Socket.IO clients against a real server on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.polling import wait_for, wait_until
from support.server import (
    RunningServer,
    SeatClient,
    bio,
    call,
    close_clients,
    create_session,
    give_consent,
    refused_connect,
    seat_clients,
    seated,
    serving,
)

CONSENT = {"record": True, "archive": True, "public": False}


async def test_full_room_flow_seen_by_all_three_seats(server: RunningServer) -> None:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    try:
        a, b, f = clients["a"], clients["b"], clients["facilitator"]
        for seat, c in clients.items():
            snap = await c.wait(
                lambda s: all(v["connected"] for v in s["seats"].values()), "all seated"
            )
            assert snap["you"] == seat
            assert snap["seats"]["a"]["name"] == "Rosa"
            assert snap["seats"]["b"]["bio"] == bio("b")
            assert "token" not in str(snap)
            assert snap["recording"]["state"] == "idle"

        # Recording cannot start before both participants consented.
        ack = await f.call("recording:start")
        assert ack == {
            "ok": False,
            "error": {"code": "precondition_failed", "message": ack["error"]["message"]},
        }
        assert "Rosa" in ack["error"]["message"] and "Dale" in ack["error"]["message"]

        assert (await a.call("consent", CONSENT))["ok"]
        assert (await b.call("consent", {**CONSENT, "archive": False}))["ok"]
        for c in clients.values():
            snap = await c.wait(lambda s: s["seats"]["b"]["consent"] is not None, "consent seen")
            assert snap["seats"]["a"]["consent"]["archive"] is True
            assert snap["seats"]["b"]["consent"]["archive"] is False

        qids = [q["id"] for q in a.last["questions"]]
        assert len(qids) >= 15
        assert (await a.call("questions:choose", {"ids": qids[:5]}))["ok"]
        assert (await b.call("questions:choose", {"ids": qids[3:8]}))["ok"]
        agreed = [qids[0], qids[4], qids[3], qids[-1]]
        assert (await f.call("questions:choose", {"ids": agreed}))["ok"]
        for c in clients.values():
            snap = await c.wait(lambda s: s["agreed"] == agreed, "agreed list")
            assert snap["seats"]["a"]["chosen"] == qids[:5]
            assert snap["seats"]["b"]["chosen"] == qids[3:8]

        start = await f.call("recording:start")
        assert start["ok"], start
        rec_id = start["recording"]["id"]
        for c in clients.values():
            snap = await c.wait(lambda s: s["recording"]["state"] == "recording", "recording")
            assert snap["recording"]["id"] == rec_id
            assert snap["timer"]["running"] is True
            assert snap["timer"]["target_s"] == 2400

        cue = await f.call("question:cue", {"id": agreed[0]})
        assert cue["ok"] and cue["cue"]["question_id"] == agreed[0]
        assert cue["cue"]["rec_time"] >= 0
        assert (await f.call("recording:pause"))["ok"]
        paused = await a.wait(lambda s: s["recording"]["state"] == "paused", "paused")
        assert paused["timer"]["running"] is False
        frozen = paused["timer"]["elapsed_s"]
        assert (await f.call("marker", {"label": "laughter"}))["ok"]
        assert (await f.call("recording:resume"))["ok"]
        await b.wait(lambda s: s["recording"]["state"] == "recording", "resumed")
        assert (await f.call("question:cue", {"id": agreed[1]}))["ok"]
        assert (await f.call("recording:stop"))["ok"]
        for c in clients.values():
            snap = await c.wait(lambda s: s["recording"]["state"] == "stopped", "stopped")
            assert [x["question_id"] for x in snap["cues"]] == agreed[:2]
            assert snap["cue"]["question_id"] == agreed[1]
            assert [m["label"] for m in snap["markers"]] == ["laughter"]
            # the marker was placed while paused: at the frozen recording time
            assert snap["markers"][0]["rec_time"] == pytest.approx(frozen, abs=0.01)
            assert snap["timer"]["elapsed_s"] >= frozen
        # a stopped recording cannot be started or stopped again
        assert (await f.call("recording:stop"))["error"]["code"] == "invalid_state"
        assert (await f.call("recording:start"))["error"]["code"] == "invalid_state"
    finally:
        await close_clients(clients)


async def test_timer_warnings_pushed_by_server(tmp_path: Path) -> None:
    # 10-minute target with warnings at 9.99 and 9.98 minutes: due 0.6 s and 1.2 s in
    async with serving(tmp_path, warning_minutes="9.99,9.98") as srv:
        created = await create_session(srv.url, target_minutes=10)
        clients = await seat_clients(srv.url, created)
        try:
            await give_consent(clients, CONSENT)
            before = time.monotonic()
            assert (await clients["facilitator"].call("recording:start"))["ok"]
            snap = await clients["a"].wait(
                lambda s: s["timer"]["warning_min"] == 9.98, "second warning", timeout=15
            )
            received = time.monotonic()
            assert snap["notice"]["type"] == "timer"
            assert snap["timer"]["warnings_min"] == [9.99, 9.98]
            # pushed when due, not before; and it reached us after it was sent
            assert 1.2 - 0.001 <= snap["timer"]["elapsed_s"] <= received - before
        finally:
            await close_clients(clients)


async def test_second_connection_replaces_first(server: RunningServer) -> None:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    second = SeatClient(server.url, created["seats"]["a"]["token"])
    try:
        first = clients["a"]
        await second.connect()
        snap = await second.wait(
            lambda s: s["notice"] and s["notice"]["type"] == "seat_replaced", "replaced notice"
        )
        assert snap["seats"]["a"]["connections"] == 2
        assert snap["seats"]["a"]["replaced_at"] is not None
        await wait_for(lambda: not first.sio.connected, what="first connection closed")
        assert first.closed and first.closed[0]["reason"] == "replaced"
        # the replacement works; the seat still counts as present
        assert (await second.call("consent", CONSENT))["ok"]
        await clients["facilitator"].wait(
            lambda s: s["seats"]["a"]["connected"] and s["seats"]["a"]["consent"], "still seated"
        )
    finally:
        await second.close()
        await close_clients(clients)


async def test_leaving_marks_seat_absent(server: RunningServer) -> None:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    try:
        await clients["b"].close()
        snap = await clients["facilitator"].wait(
            lambda s: not s["seats"]["b"]["connected"], "b left"
        )
        assert snap["notice"]["type"] == "seat_left"
        async with aiohttp.ClientSession() as http:
            body = await call(http, "GET", f"{server.url}/api/sessions/{created['id']}")
        assert body["seats"]["a"]["connected"] is True
        assert body["seats"]["b"]["connected"] is False
    finally:
        await close_clients(clients)


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "token_missing"),
        ({}, "token_missing"),
        ({"token": 5}, "token_missing"),
        ({"token": "short"}, "token_missing"),
        ({"token": "x" * 40}, "token_invalid"),
        ({"token": "y" * 500}, "token_missing"),
    ],
)
async def test_bad_tokens_refused_at_connect(server: RunningServer, auth: Any, code: str) -> None:
    error = await refused_connect(server.url, auth)
    assert error["data"]["code"] == code
    assert error["message"]


async def test_expired_token_refused(tmp_path: Path) -> None:
    async with serving(tmp_path, token_ttl_days="0.0000001") as srv:  # ~9 ms
        created = await create_session(srv.url)
        # issued before this moment, so expired once 9 ms have passed since
        await wait_until(time.time() + 0.0000001 * 86400, clock=time.time)
        error = await refused_connect(srv.url, {"token": created["seats"]["a"]["token"]})
        assert error["data"]["code"] == "token_expired"


async def test_restart_keeps_state_and_ends_the_running_take_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with serving(data) as srv:
        created = await create_session(srv.url)
        async with seated(srv.url, created) as clients:
            for seat in ("a", "b"):
                await clients[seat].call("consent", {**CONSENT, "public": seat == "a"})
            f = clients["facilitator"]
            qid = f.last["questions"][2]["id"]
            assert (await f.call("questions:choose", {"ids": [qid]}))["ok"]
            assert (await f.call("recording:start"))["ok"]
            assert (await f.call("question:cue", {"id": qid}))["ok"]
            assert (await f.call("marker", {"label": "tears"}))["ok"]
        port = srv.settings.port

    async with serving(data, port=port) as srv, seated(srv.url, created) as clients:
        snap = clients["b"].last
        # an orderly shutdown stops the take (a crash leaves it interrupted: test_crash)
        assert snap["recording"]["state"] == "stopped"
        assert snap["recording"]["stop_reason"] == "server_restart"
        assert snap["seats"]["a"]["consent"]["public"] is True
        assert snap["seats"]["b"]["consent"]["public"] is False
        assert snap["agreed"] == [qid]
        assert [c["question_id"] for c in snap["cues"]] == [qid]
        assert [m["label"] for m in snap["markers"]] == ["tears"]
        async with aiohttp.ClientSession() as http:
            body = await call(http, "GET", f"{srv.url}/api/sessions/{created['id']}")
        assert body["recording"]["state"] == "stopped"
        assert body["recording"]["status_reason"] == "server_restart"
        assert len(body["consent_history"]) == 2
        # a new take can begin after a restart
        start = await clients["facilitator"].call("recording:start")
        assert start["ok"] and start["recording"]["take"] == 2


async def test_facilitator_notes_are_private_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    text = "Rosa mentioned her grandmother's farm"
    async with serving(data) as srv:
        created = await create_session(srv.url)
        async with seated(srv.url, created) as clients:
            f = clients["facilitator"]
            ack = await f.call("note", {"text": text})
            assert ack["ok"] and ack["note"]["rec_time"] is None  # before recording: time of day
            snap = await f.wait(lambda s: s.get("notes"), "note in the facilitator's snapshot")
            assert snap["notes"][0]["text"] == text
            for seat in ("a", "b"):
                assert all("notes" not in s for s in clients[seat].snapshots)
                assert text not in str(clients[seat].snapshots)
            assert (await clients["a"].call("note", {"text": "x"}))["error"]["code"] == "forbidden"
            assert (await f.call("note", {"text": ""}))["error"]["code"] == "invalid_value"
            assert (await f.call("note", {"text": "n" * 2001}))["error"]["code"] == "too_long"
    async with serving(data) as srv, seated(srv.url, created, ("facilitator",)) as again:
        assert [n["text"] for n in again["facilitator"].last["notes"]] == [text]
