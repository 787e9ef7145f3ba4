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
import pytest

from support.media import start_recording, tone_room
from support.polling import wait_until
from support.process import storyroom
from support.server import call, finalized, serving

CONSENT = {"record": True, "archive": True, "public": False}


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as http:
        return await call(http, "GET", url)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.embedded_database
async def test_a_backup_taken_during_a_take_restores(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    async with serving(data) as server:
        async with tone_room(server.url) as (clients, _):
            done_id = (await start_recording(data / "recordings", clients, CONSENT)).name
            await wait_until(time.monotonic() + 3.0)
            assert (await clients["facilitator"].call("recording:stop"))["ok"]
        done = await finalized(server.url, done_id)
        done_session = done["session_id"]

        async with tone_room(server.url) as (clients, _):
            live_id = (await start_recording(data / "recordings", clients, CONSENT)).name
            begun = time.monotonic()
            await wait_until(begun + 4.0)
            started = time.monotonic()
            result = await asyncio.to_thread(
                storyroom, "backup", str(dest), "--data-dir", str(data)
            )
            took = time.monotonic() - started
            # the copy holds the take as far as the backup saw it, less what was not
            # yet on disk (at most 2 s): however long a busy machine made the command
            copied = (started - begun - 2.0, started + took - begun + 0.5)
            assert result.returncode == 0, result.stdout + result.stderr
            live = clients["facilitator"].last
            assert live["recording"]["state"] == "recording"  # the take went on meanwhile
            live_session = live["session"]["id"]
    print(result.stdout)
    total = int(
        result.stdout.split("total")[1].split("file(s)")[1].split("bytes")[0].replace(",", "")
    )
    print(f"backup: {took:.2f} s for {total:,} bytes (the command, start-up included)")
    assert f"written to {dest}" in result.stdout
    assert total == sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())

    async with serving(dest) as restored:
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
        assert copied[0] <= rec["duration_s"] <= copied[1], (copied, rec)
        stems = dest / "recordings" / live_id / "stems"
        raw = sum(p.stat().st_size for p in stems.glob("*.opus"))
        finished = sum(
            p.stat().st_size for p in (dest / "recordings" / done_id).rglob("*") if p.is_file()
        )
        print(
            f"raw stems: {raw / rec['duration_s'] * 60:,.0f} bytes a minute (3 voices); "
            f"a finished take's folder: {finished / done['duration_s'] * 60:,.0f} bytes a minute"
        )
