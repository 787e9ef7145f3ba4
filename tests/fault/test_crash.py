"""A server process killed with SIGKILL mid-recording loses at most ~2 s of any stem."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import aiohttp
import pytest

from storyroom.recording.timeline import read_recording
from support.media import RATE, SeatPeer, ToneTrack, decode_ogg, dominant_frequency
from support.process import serve
from support.server import STAFF_TOKEN, create_session, seat_clients, wait_for

TONES = {"a": 440.0, "b": 660.0, "facilitator": 880.0}


@pytest.mark.slow
async def test_sigkill_mid_recording_keeps_all_but_the_last_two_seconds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve(data, tmp_path / "first.log", env={"STORYROOM_LOG_LEVEL": "WARNING"})
    url = server.url
    try:
        await server.ready("/healthz")
        created = await create_session(url)
        clients = await seat_clients(url, created)
        peers = {s: SeatPeer(clients[s], ToneTrack(TONES[s])) for s in clients}
        try:
            for peer in peers.values():
                await peer.connect()
            await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=15)
            for seat in ("a", "b"):
                assert (
                    await clients[seat].call(
                        "consent", {"record": True, "archive": True, "public": False}
                    )
                )["ok"]
            start = await clients["facilitator"].call("recording:start")
            assert start["ok"]
            started = time.time()
            rec_dir = data / "recordings" / start["recording"]["id"]
            await wait_for(lambda: time.time() - started > 6.0, timeout=10)
            server.signal(signal.SIGKILL)
            killed = time.time()
            await server.exited(timeout=10)
        finally:
            for peer in peers.values():
                await peer.close()
            for client in clients.values():
                await client.close()
    finally:
        server.stop()

    recorded = killed - started
    segments = {s.seat: s for s in read_recording(rec_dir)}
    assert set(segments) == set(TONES)
    for seat in TONES:
        audio = decode_ogg(str(rec_dir / "stems" / f"{seat}-01.opus"))
        seconds = len(audio) / RATE
        print(f"{seat}: {seconds:.2f} s of {recorded:.2f} s recorded survived SIGKILL")
        assert recorded - 2.0 <= seconds <= recorded + 0.5, (seat, seconds, recorded)
        assert dominant_frequency(audio[-RATE:]) == pytest.approx(TONES[seat], abs=5)
        # the timing log covers what the stem holds
        assert segments[seat].packets[-1].granule_end >= len(audio) - 960 * 2

    # restart on the same data: the recording is found, interrupted, files intact
    server = serve(data, tmp_path / "second.log", port=server.port)
    try:
        await server.ready("/healthz")
        async with aiohttp.ClientSession() as http:
            resp = await http.get(
                f"{url}/api/sessions/{created['id']}",
                headers={"Authorization": f"Bearer {STAFF_TOKEN}"},
            )
            body = await resp.json()
        assert body["recording"]["state"] == "interrupted"
        assert body["recording"]["id"] == start["recording"]["id"]
        log = (rec_dir / "recording.jsonl").read_text()
        assert '"interrupted"' in log.splitlines()[-1]
        for seat in TONES:
            assert len(decode_ogg(str(rec_dir / "stems" / f"{seat}-01.opus"))) > RATE * (
                recorded - 2.0
            )
    finally:
        server.stop()
