"""After a real three-seat session, staff fetch the finalized files over HTTP."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import aiohttp
import pytest

from support.media import SeatPeer, ToneTrack
from support.server import STAFF_TOKEN, RunningServer, create_session, seat_clients, wait_for

AUTH = {"Authorization": f"Bearer {STAFF_TOKEN}"}
TONES = {"a": 440.0, "b": 660.0, "facilitator": 880.0}


async def get_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=AUTH, **kwargs) as resp:
        return resp.status, await resp.json()


@pytest.mark.slow
async def test_session_to_ready_recording_with_range_downloads(server: RunningServer) -> None:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    peers = {s: SeatPeer(clients[s], ToneTrack(TONES[s])) for s in clients}
    try:
        for peer in peers.values():
            await peer.connect()
        for seat in ("a", "b"):
            assert (
                await clients[seat].call(
                    "consent", {"record": True, "archive": True, "public": False}
                )
            )["ok"]
        f = clients["facilitator"]
        qids = [q["id"] for q in f.last["questions"]][:2]
        start = await f.call("recording:start")
        rec_id = start["recording"]["id"]
        began = time.time()
        assert (await f.call("question:cue", {"id": qids[0]}))["ok"]
        await wait_for(lambda: time.time() - began > 2.0)
        assert (await f.call("question:cue", {"id": qids[1]}))["ok"]
        await wait_for(lambda: time.time() - began > 4.0)
        assert (await f.call("recording:stop"))["ok"]
        # the facilitator sees finalization progress, then ready
        snap = await f.wait(lambda s: s["recording"]["status"] == "ready", "ready", timeout=120)
        assert snap["recording"]["finalize"]["percent"] == 100
    finally:
        for peer in peers.values():
            await peer.close()
        for client in clients.values():
            await client.close()

    status, listing = await get_json(f"{server.url}/api/recordings")
    assert status == 200 and [r["id"] for r in listing["recordings"]] == [rec_id]
    status, rec = await get_json(f"{server.url}/api/recordings/{rec_id}")
    assert status == 200
    assert rec["status"] == "ready" and rec["session_id"] == created["id"]
    assert 3.5 < rec["duration_s"] < 6.0
    kinds = {f["kind"] for f in rec["files"]}
    assert {"master", "stem", "access", "chapters", "metadata", "manifest"} <= kinds
    names = {f["name"] for f in rec["files"]}
    assert {"master.wav", "stems/a.flac", "stems/b.flac", "stems/facilitator.flac"} <= names
    assert len(rec["chapters"]) == 2

    async with aiohttp.ClientSession() as http:
        for entry in rec["files"]:
            async with http.get(server.url + entry["url"], headers=AUTH) as resp:
                body = await resp.read()
                assert resp.status == 200, entry["name"]
                assert len(body) == entry["bytes"]
                assert hashlib.sha256(body).hexdigest() == entry["sha256"]
                assert resp.headers["ETag"] == f'"{entry["sha256"]}"'
        master = next(f for f in rec["files"] if f["name"] == "master.wav")
        async with http.get(
            server.url + master["url"], headers={**AUTH, "Range": "bytes=0-11"}
        ) as resp:
            assert resp.status == 206
            head = await resp.read()
            assert head[:4] == b"RIFF" and head[8:12] == b"WAVE"
            assert resp.headers["Content-Range"].startswith("bytes 0-11/")
        async with http.get(
            server.url + master["url"], headers={**AUTH, "Range": "bytes=100-"}
        ) as resp:
            assert resp.status == 206
            assert len(await resp.read()) == master["bytes"] - 100
        metadata = next(f for f in rec["files"] if f["name"] == "metadata.json")
        async with http.get(server.url + metadata["url"], headers=AUTH) as resp:
            meta = json.loads(await resp.read())
        assert meta["recording_id"] == rec_id or meta.get("recording", {}).get("id") == rec_id
        assert "Rosa" in json.dumps(meta) and "token" not in json.dumps(meta).lower()
        # not listed, traversal, or another recording: 404 without touching the disk
        for bad in (
            "../../storyroom.sqlite3",
            "..%2F..%2Fstaff-token",
            "stems/a-01.opus.missing",
            "nope.wav",
        ):
            async with http.get(
                f"{server.url}/api/recordings/{rec_id}/files/{bad}", headers=AUTH
            ) as resp:
                assert resp.status == 404, bad
        async with http.get(server.url + master["url"]) as resp:
            assert resp.status == 401
