"""`storyroom backup DEST` taken while a take is being recorded: a server started on the
copy lists every session and recording, the finished take with its files byte for byte,
and finalizes the live one from the stems as far as they were copied."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp

from support.media import close_room, open_room, start_take
from support.process import storyroom, until
from support.server import STAFF_TOKEN, RunningServer, SeatClient, start_server, wait_for

CONSENT = {"record": True, "archive": True, "public": False}
AUTH = {"Authorization": f"Bearer {STAFF_TOKEN}"}


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def record(server: RunningServer, seconds: float) -> tuple[dict[str, SeatClient], Any, str]:
    """A new room of tone seats, recording for `seconds`; returns with the take running."""
    clients, peers = await open_room(server)
    recording_id = await start_take(clients, peers, CONSENT)
    until_s = time.monotonic() + seconds
    await wait_for(lambda: time.monotonic() > until_s, timeout=seconds + 5)
    return clients, peers, recording_id


async def finalized(url: str, recording_id: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        rec: dict[str, Any] = await get(f"{url}/api/recordings/{recording_id}")
        return rec if rec["status"] in ("ready", "failed") else None

    rec = await until(ready, timeout=120, what=f"{recording_id} finalized")
    assert rec["status"] == "ready", rec
    return rec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_backup_taken_during_a_take_restores(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    server = await start_server(data)
    try:
        clients, peers, done_id = await record(server, 3.0)
        assert (await clients["facilitator"].call("recording:stop"))["ok"]
        await close_room(clients, peers)
        done = await finalized(server.url, done_id)
        done_session = done["session_id"]

        clients, peers, live_id = await record(server, 4.0)
        try:
            started = time.monotonic()
            result = await asyncio.to_thread(
                storyroom, "backup", str(dest), "--data-dir", str(data)
            )
            took = time.monotonic() - started
            assert result.returncode == 0, result.stdout + result.stderr
            live = clients["facilitator"].last
            assert live["recording"]["state"] == "recording"  # the take went on meanwhile
            live_session = live["session"]["id"]
        finally:
            await close_room(clients, peers)
    finally:
        await server.close()
    print(result.stdout)
    total = int(
        result.stdout.split("total")[1].split("file(s)")[1].split("bytes")[0].replace(",", "")
    )
    print(f"backup: {took:.2f} s for {total:,} bytes (the command, start-up included)")
    assert f"written to {dest}" in result.stdout
    assert total == sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())

    restored = await start_server(dest)
    try:
        sessions = await get(f"{restored.url}/api/sessions")
        listed = {s["id"] for s in sessions["sessions"]}
        assert {done_session, live_session} <= listed
        recordings = {
            r["id"]: r for r in (await get(f"{restored.url}/api/recordings"))["recordings"]
        }
        assert {done_id, live_id} <= set(recordings)
        # the finished take: ready, its files as they were
        again = await get(f"{restored.url}/api/recordings/{done_id}")
        assert again["status"] == "ready"
        for entry in again["files"]:
            copy = dest / "recordings" / done_id / entry["name"]
            assert (
                sha256(copy)
                == entry["sha256"]
                == sha256(data / "recordings" / done_id / entry["name"])
            )
        # the take that was recording: interrupted in the copy, finalized from its stems
        interrupted = await get(f"{restored.url}/api/sessions/{live_session}")
        assert interrupted["recording"]["state"] == "interrupted"
        rec = await finalized(restored.url, live_id)
        assert 2.5 <= rec["duration_s"] <= 6.0, rec
        stems = dest / "recordings" / live_id / "stems"
        raw = sum(p.stat().st_size for p in stems.glob("*.opus"))
        finished = sum(
            p.stat().st_size for p in (dest / "recordings" / done_id).rglob("*") if p.is_file()
        )
        print(
            f"raw stems: {raw / rec['duration_s'] * 60:,.0f} bytes a minute (3 voices); "
            f"a finished take's folder: {finished / done['duration_s'] * 60:,.0f} bytes a minute"
        )
    finally:
        await restored.close()
