"""SIGTERM during a take: the take stops cleanly (stems flushed and closed, `stopped` with
reason `server_restart`), every seat is told, the process exits within the grace; the
next start finalizes the take whole and the session goes on with a new take. A real
`storyroom serve` process, real Socket.IO clients and aiortc peers sending tones."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.config import Settings
from storyroom.recording.timeline import read_recording
from support.media import TONES, start_recording, tone_room
from support.polling import wait_until
from support.process import serve
from support.server import SeatClient, call, finalized

CONSENT = {"record": True, "archive": True, "public": False}


def told_of_restart(snapshot: dict[str, Any]) -> bool:
    rec, notice = snapshot["recording"], snapshot["notice"] or {}
    return bool(
        rec["state"] == "stopped"
        and rec["stop_reason"] == "server_restart"
        and notice.get("reason") == "server_restart"
    )


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http:
        return await call(http, "GET", url)


@pytest.mark.slow
async def test_sigterm_stops_the_take_cleanly_and_the_session_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    grace = Settings().shutdown_grace_s
    server = serve(data, tmp_path / "first.log")
    try:
        await server.ready()
        async with tone_room(server.url) as (clients, _):
            recording_id = (await start_recording(data / "recordings", clients, CONSENT)).name
            started = time.monotonic()
            tokens = {seat: client.token for seat, client in clients.items()}
            session_id = clients["a"].last["session"]["id"]
            await wait_until(started + 5.0)
            terminated = server.signal(signal.SIGTERM)
            for seat, client in clients.items():
                await client.wait(told_of_restart, f"{seat} told of the restart")
            exited = await server.exited(timeout=grace + 20)
    finally:
        server.stop()
    recorded = terminated - started
    assert server.process.returncode == 0, server.log()
    print(f"SIGTERM to exit: {exited - terminated:.2f} s (grace {grace:.0f} s)")
    assert exited - terminated < grace

    # on disk: every stem closed by the stop, the recording's log ends with it
    rec_dir = data / "recordings" / recording_id
    segments = read_recording(rec_dir)
    assert {s.seat for s in segments} == set(TONES)
    for segment in segments:
        assert segment.events[-1]["type"] == "close", segment.seat
        assert segment.events[-1]["reason"] == "stopped"
    log = [json.loads(line) for line in (rec_dir / "recording.jsonl").read_text().splitlines()]
    assert log[-1]["type"] == "stop"
    assert recorded - 1.0 <= log[-1]["rec"] <= recorded + 0.2

    # the next start: finalized whole, and a new take in the same session
    restarted = time.monotonic()
    server = serve(data, tmp_path / "second.log", port=server.port)
    try:
        ready = await server.ready()
        print(f"restart to ready: {ready - restarted:.2f} s")
        body = await get_json(f"{server.url}/api/sessions/{session_id}")
        assert body["recording"]["state"] == "stopped"
        assert body["recording"]["status_reason"] == "server_restart"
        rec = await finalized(server.url, recording_id)
        print(f"recorded {recorded:.2f} s, finalized {rec['duration_s']:.2f} s")
        assert abs(rec["duration_s"] - recorded) <= 1.0

        again = {seat: SeatClient(server.url, token) for seat, token in tokens.items()}
        try:
            for client in again.values():
                await client.connect()
            assert again["a"].last["recording"]["state"] == "stopped"
            assert again["a"].last["recording"]["stop_reason"] == "server_restart"
            take = await again["facilitator"].call("recording:start")
            assert take["ok"], take
            assert take["recording"]["take"] == 2
            assert (await again["facilitator"].call("recording:stop"))["ok"]
        finally:
            for client in again.values():
                await client.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log()
