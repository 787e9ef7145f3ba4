"""A server process killed with SIGKILL mid-recording loses at most ~2 s of any stem."""

from __future__ import annotations

import asyncio
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
from support.media import RATE, SeatPeer, ToneTrack, decode_ogg, dominant_frequency
from support.server import STAFF_TOKEN, create_session, free_port, seat_clients, wait_for

TONES = {"a": 440.0, "b": 660.0, "facilitator": 880.0}


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

    deadline = time.monotonic() + 20
    while not await probe():
        assert time.monotonic() < deadline, "server did not come up"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_sigkill_mid_recording_keeps_all_but_the_last_two_seconds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server_process(data, port) as proc:
        await healthy(url)
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
            proc.send_signal(signal.SIGKILL)
            killed = time.time()
            proc.wait(timeout=10)
        finally:
            for peer in peers.values():
                await peer.close()
            for client in clients.values():
                await client.close()

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
    with server_process(data, port):
        await healthy(url)
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
