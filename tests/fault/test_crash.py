"""A server process killed with SIGKILL mid-recording loses at most ~2 s of any stem."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import aiohttp
import pytest

from storyroom.recording.timeline import read_recording
from support.media import (
    RATE,
    TONES,
    audio_sent,
    decode_stem,
    dominant_frequency,
    start_recording,
    tone_room,
)
from support.polling import wait_for, wait_until
from support.process import serve
from support.server import call


@pytest.mark.slow
async def test_sigkill_mid_recording_keeps_all_but_the_last_two_seconds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve(data, tmp_path / "first.log", env={"STORYROOM_LOG_LEVEL": "WARNING"})
    url = server.url
    try:
        await server.ready("/healthz", timeout=60)
        async with tone_room(url) as (clients, peers):
            created_id = clients["a"].last["session"]["id"]
            await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=30)
            # audio is bounded by what the tone tracks had sent: on a busy machine they
            # fall behind the wall clock, and the server cannot keep what never came
            before_start = audio_sent(peers)
            rec_dir = await start_recording(data / "recordings", clients)
            started = audio_sent(peers)
            await wait_until(time.monotonic() + 6.0)
            server.signal(signal.SIGKILL)
            killed = audio_sent(peers)
            await server.exited(timeout=10)
    finally:
        server.stop()

    segments = {s.seat: s for s in read_recording(rec_dir)}
    assert set(segments) == set(TONES)
    survived = {}
    for seat in TONES:
        audio = decode_stem(rec_dir, seat)
        survived[seat] = seconds = len(audio) / RATE
        low, high = killed[seat] - started[seat] - 2.0, killed[seat] - before_start[seat] + 0.1
        print(f"{seat}: {seconds:.2f} s survived SIGKILL, of {high - 0.1:.2f} s sent")
        assert low <= seconds <= high, (seat, low, seconds, high)
        assert dominant_frequency(audio[-RATE:]) == pytest.approx(TONES[seat], abs=5)
        # the timing log covers what the stem holds
        assert segments[seat].packets[-1].granule_end >= len(audio) - 960 * 2

    # restart on the same data: the recording is found, interrupted, files intact
    server = serve(data, tmp_path / "second.log", port=server.port)
    try:
        await server.ready("/healthz", timeout=60)
        async with aiohttp.ClientSession() as http:
            body = await call(http, "GET", f"{url}/api/sessions/{created_id}")
        assert body["recording"]["state"] == "interrupted"
        assert body["recording"]["id"] == rec_dir.name
        log = (rec_dir / "recording.jsonl").read_text()
        assert '"interrupted"' in log.splitlines()[-1]
        for seat in TONES:
            stem = decode_stem(rec_dir, seat)
            assert len(stem) / RATE == survived[seat]
    finally:
        server.stop()
