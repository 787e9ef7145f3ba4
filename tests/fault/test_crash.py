"""A server process killed with SIGKILL mid-recording loses at most ~2 s of any stem."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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
from support.server import STAFF_TOKEN, call, free_port


@contextlib.contextmanager
def server_process(data_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "STORYROOM_STAFF_TOKEN": STAFF_TOKEN,
        "STORYROOM_LOG_LEVEL": "WARNING",
        "STORYROOM_ICE_HOST_ADDRESSES": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storyroom",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


async def healthy(url: str) -> None:
    async def probe() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(probe, timeout=60, interval=0.1, what="the server to come up")


@pytest.mark.slow
async def test_sigkill_mid_recording_keeps_all_but_the_last_two_seconds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server_process(data, port) as proc:
        await healthy(url)
        async with tone_room(url) as (clients, peers):
            created_id = clients["a"].last["session"]["id"]
            await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=30)
            # audio is bounded by what the tone tracks had sent: on a busy machine they
            # fall behind the wall clock, and the server cannot keep what never came
            before_start = audio_sent(peers)
            rec_dir = await start_recording(data / "recordings", clients)
            started = audio_sent(peers)
            await wait_until(time.monotonic() + 6.0)
            proc.send_signal(signal.SIGKILL)
            killed = audio_sent(peers)
            proc.wait(timeout=10)

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
    with server_process(data, port):
        await healthy(url)
        async with aiohttp.ClientSession() as http:
            body = await call(http, "GET", f"{url}/api/sessions/{created_id}")
        assert body["recording"]["state"] == "interrupted"
        assert body["recording"]["id"] == rec_dir.name
        log = (rec_dir / "recording.jsonl").read_text()
        assert '"interrupted"' in log.splitlines()[-1]
        for seat in TONES:
            stem = decode_stem(rec_dir, seat)
            assert len(stem) / RATE == survived[seat]
