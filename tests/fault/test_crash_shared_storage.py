"""A server killed with SIGKILL mid-take whose recordings folder is then lost: the take
is rebuilt from what the shipper put in shared storage (a real SeaweedFS) and finalized,
with at most ~2 s missing at the end and every byte before intact; the finalized files
are in the bucket and a staff download is a presigned URL on which Range works. A node
that comes back with its disk ships what the crash left unshipped."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from storyroom.config import Settings
from storyroom.recording import layout
from storyroom.recording.recorder import FLUSH_INTERVAL
from storyroom.storage.keys import final_key, recording_prefix
from storyroom.storage.objects import open_s3
from storyroom.storage.recordings import RecordingStorage
from support.media import (
    RATE,
    TONES,
    audio_sent,
    decode_ogg,
    decode_stem,
    dominant_frequency,
    start_recording,
    tone_room,
)
from support.polling import wait_for, wait_until
from support.process import metric, serve
from support.seaweedfs import seaweed_s3
from support.server import AUTH, call, finalized

# Beyond the shipping lag, a crash can lose the audio the recorder had not yet flushed
# when the last shipped pass read the files (one flush interval), and the page a range
# cut in two (the recorder writes one page per seat and flush).
PAGE_S = FLUSH_INTERVAL


async def _stored_names(settings: Settings, recording_id: str) -> set[str]:
    async with open_s3(settings) as objects:
        prefix = recording_prefix("", recording_id)
        return {o.key.removeprefix(prefix) async for o in objects.list(prefix)}


@pytest.mark.slow
async def test_sigkill_and_a_lost_folder_are_rebuilt_from_shared_storage(tmp_path: Path) -> None:
    async with seaweed_s3(tmp_path / "s3") as s3:
        env = {**s3.settings(), "STORYROOM_LOG_LEVEL": "WARNING"}
        settings = Settings.load(environ=s3.settings())
        data = tmp_path / "data"
        server = serve(data, tmp_path / "first.log", env=env)
        url = server.url
        try:
            await server.ready("/readyz", timeout=60)
            async with tone_room(url) as (clients, peers), aiohttp.ClientSession() as http:
                await wait_for(
                    lambda: all(len(p.received) == 2 for p in peers.values()), timeout=30
                )
                before_start = audio_sent(peers)
                rec_dir = await start_recording(data / "recordings", clients)
                rec_id = rec_dir.name
                started = audio_sent(peers)
                # shipped while recording: every stem, timing log and the clock's log
                wanted = {layout.RECORDING_LOG} | {
                    name(seat, 1)
                    for seat in TONES
                    for name in (layout.segment_opus, layout.segment_timing)
                }

                async def all_shipped() -> bool:
                    names = await _stored_names(settings, rec_id)
                    return {n.removeprefix("raw/").rpartition("/")[0] for n in names} >= wanted

                await wait_for(all_shipped, timeout=20, interval=0.2, what="every file shipped")
                await wait_until(time.monotonic() + 6.0)
                assert await metric(url, "storyroom_shipped_bytes_total") > 0
                async with http.get(f"{url}/readyz") as resp:
                    ready = await resp.json()
                assert resp.status == 200, ready
                assert next(c for c in ready["checks"] if c["name"] == "shipping")["ok"]
                # what a crash can lose is bounded by the lag now and the time until the
                # kill (a busy machine makes both longer, and the bound with them)
                asked = time.monotonic()
                lag = await metric(url, "storyroom_shipping_lag_seconds")
                assert 0 <= lag <= 10, lag
                at_most_lost = (
                    lag + (server.signal(signal.SIGKILL) - asked) + FLUSH_INTERVAL + PAGE_S
                )
                killed = audio_sent(peers)
                await server.exited(timeout=10)
        finally:
            server.stop()

        # what the node's own disk kept; then the folder is lost with the node
        kept = tmp_path / "kept"
        shutil.copytree(rec_dir, kept)
        on_disk = {seat: len(decode_stem(kept, seat)) / RATE for seat in TONES}
        shutil.rmtree(rec_dir)

        # a restart finds the take interrupted and finalizes it from shared storage
        server = serve(data, tmp_path / "second.log", port=server.port, env=env)
        try:
            await server.ready("/readyz", timeout=60)
            rec = await finalized(url, rec_id, timeout=180)
            for name in [layout.RECORDING_LOG] + [layout.segment_opus(seat, 1) for seat in TONES]:
                # everything shipped is intact: a prefix of what the disk had
                rebuilt, original = (rec_dir / name).read_bytes(), (kept / name).read_bytes()
                assert len(rebuilt) > 0 and original.startswith(rebuilt), name
            for seat in TONES:
                seconds = len(decode_stem(rec_dir, seat)) / RATE
                lost = on_disk[seat] - seconds
                print(
                    f"{seat}: {seconds:.2f} s rebuilt from storage, {lost:.2f} s short of the "
                    f"disk (shipping lag {lag:.2f} s just before the kill)"
                )
                assert 0 <= lost <= at_most_lost, (seat, on_disk[seat], seconds, at_most_lost)
                low = killed[seat] - started[seat] - 2.0 - at_most_lost
                assert low <= seconds <= killed[seat] - before_start[seat] + 0.1
                assert dominant_frequency(decode_stem(rec_dir, seat)[-RATE:]) == pytest.approx(
                    TONES[seat], abs=5
                )
                flac = decode_ogg(str(rec_dir / layout.finalized_stem(seat)))
                assert abs(len(flac) / RATE - rec["duration_s"]) < 0.1

            # the finalized files went up, and a staff download is a presigned redirect
            stored = await _stored_names(settings, rec_id)
            for entry in rec["files"]:
                assert final_key("", rec_id, entry["name"]).rpartition(rec_id + "/")[2] in stored
            master = next(f for f in rec["files"] if f["name"] == "master.wav")
            local = (rec_dir / "master.wav").read_bytes()
            async with aiohttp.ClientSession() as http:
                async with http.get(url + master["url"], allow_redirects=False) as resp:
                    assert resp.status == 401  # the same authorisation as before
                async with http.get(
                    url + master["url"], headers=AUTH, allow_redirects=False
                ) as resp:
                    assert resp.status == 307, await resp.text()
                    location = resp.headers["Location"]
                assert location.startswith(s3.endpoint + "/") and "X-Amz-Signature=" in location
                async with http.get(location, headers={"Range": "bytes=100-1123"}) as resp:
                    body = await resp.read()
                    assert resp.status == 206
                    assert resp.headers["Content-Range"] == f"bytes 100-1123/{len(local)}"
                    assert 'filename="' in resp.headers["Content-Disposition"]
                assert body == local[100:1124]
                async with http.get(location) as resp:
                    assert resp.status == 200 and await resp.read() == local
                # the bucket itself refuses anyone without the signature
                bare = location.split("?")[0]
                async with http.get(bare) as resp:
                    assert resp.status == 403
                audit = await call(http, "GET", f"{url}/api/audit?action=download&target={rec_id}")
                assert [e["detail"]["file"] for e in audit["entries"]] == ["master.wav"]
        finally:
            server.stop()


@pytest.mark.slow
async def test_a_restart_ships_what_the_crash_left_unshipped(tmp_path: Path) -> None:
    async with seaweed_s3(tmp_path / "s3") as s3:
        env = {**s3.settings(), "STORYROOM_LOG_LEVEL": "WARNING"}
        settings = Settings.load(environ=s3.settings())
        data = tmp_path / "data"
        server = serve(data, tmp_path / "first.log", env=env)
        try:
            await server.ready("/readyz", timeout=60)
            async with tone_room(server.url) as (clients, peers):
                await wait_for(
                    lambda: all(len(p.received) == 2 for p in peers.values()), timeout=30
                )
                rec_dir = await start_recording(data / "recordings", clients)
                await wait_for(
                    lambda: _stored_names(settings, rec_dir.name), timeout=20, what="a first pass"
                )
                await wait_until(time.monotonic() + 3.0)
                server.signal(signal.SIGKILL)
                await server.exited(timeout=10)
        finally:
            server.stop()

        # the node comes back with its disk: what the crash left unshipped goes up
        server = serve(data, tmp_path / "second.log", port=server.port, env=env)
        try:
            await server.ready("/readyz", timeout=60)
            await finalized(server.url, rec_dir.name, timeout=180)
            async with open_s3(settings) as objects:
                shared = RecordingStorage(objects)
                names = [layout.RECORDING_LOG] + [
                    name(seat, 1)
                    for seat in TONES
                    for name in (layout.segment_opus, layout.segment_timing)
                ]

                async def whole() -> bool:
                    rebuilt = tmp_path / f"rebuilt-{time.monotonic_ns()}"
                    await shared.rebuild(rec_dir.name, rebuilt)
                    return all(
                        (rebuilt / n).read_bytes() == (rec_dir / n).read_bytes() for n in names
                    )

                await wait_for(whole, timeout=20, interval=0.5, what="the store to hold it all")
            assert '"interrupted"' in (rec_dir / layout.RECORDING_LOG).read_text()
        finally:
            server.stop()
