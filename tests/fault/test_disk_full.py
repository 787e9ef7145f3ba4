"""A full disk while recording: the room is told, the recording stops cleanly, what was
written survives and finalizes once there is space again; other rooms keep recording.

The full disk is real: a small tmpfs mounted (inside the test process's private mount
namespace, see conftest) on the one recording's directory, filled with a filler file.
The database and every other recording stay on the normal disk.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import PRIVATE_MOUNTS
from playwright.async_api import Browser, expect

import storyroom.room.rooms
from storyroom.__main__ import main
from storyroom.ids import new_id
from storyroom.media.aiortc_internals import RtpAudioPacket
from storyroom.recording import ogg
from storyroom.recording.recorder import DISK_FULL, WRITE_FAILED, StemSegment, write_failure_reason
from storyroom.recording.timeline import read_recording, read_segment
from storyroom.store import Store
from support.browser import EXPECT_MS, LAPTOP, PHONE, screenshot, seat_page, with_raw_audio
from support.media import (
    RATE,
    TONES,
    audio_sent,
    decode_ogg,
    decode_stem,
    dominant_frequency,
    tone_room,
)
from support.ogg import encode_tone, read_pages
from support.polling import wait_for, wait_until
from support.server import (
    RunningServer,
    close_clients,
    create_session,
    give_consent,
    seat_clients,
    serving,
)


class Tmpfs:
    """A tmpfs of `size` mounted on `path` for the life of the context."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size

    def __enter__(self) -> Tmpfs:
        self.path.mkdir(parents=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            check=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=True)

    def fill(self) -> Path:
        """Take every free byte with a filler file; returns it."""
        filler = self.path / ".filler"
        chunk = b"\0" * 65536
        with open(filler, "wb", buffering=0) as f:
            while True:
                try:
                    f.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
        with open(filler, "ab", buffering=0) as f:  # the last partial pages too
            while True:
                try:
                    f.write(b"\0" * 512)
                except OSError:
                    break
        return filler


@pytest.fixture
def planned_recording_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Recording ids known before the recordings start, so the test can put one of
    them on its own small file system. Only the choice of id is the test's."""
    planned: list[str] = []

    def next_id(prefix: str) -> str:
        return planned.pop(0) if prefix == "rec" and planned else new_id(prefix)

    monkeypatch.setattr(storyroom.room.rooms, "new_id", next_id)
    yield planned


def stem_seconds(rec_dir: Path, seat: str) -> float:
    return len(decode_stem(rec_dir, seat)) / RATE


def disk_full_notice(snapshot: dict[str, Any]) -> bool:
    return bool((snapshot["notice"] or {}).get("reason") == DISK_FULL)


@pytest.mark.slow
@pytest.mark.skipif(not PRIVATE_MOUNTS, reason="needs a private mount namespace")
@pytest.mark.embedded_database
async def test_full_disk_stops_the_room_cleanly_and_finalizes_after_space_is_freed(
    tmp_path: Path, planned_recording_ids: list[str]
) -> None:
    """Every moment below is bounded by what was measured just before and just after it,
    and audio by what the tone tracks had sent by then, so a busy machine cannot fail it."""
    data = tmp_path / "data"
    recordings = data / "recordings"
    full_id, healthy_id = new_id("rec"), new_id("rec")
    planned_recording_ids += [full_id, healthy_id]
    with Tmpfs(recordings / full_id, "8m") as disk:
        async with (
            serving(data) as server,
            tone_room(server.url) as (full_clients, full_peers),
            tone_room(server.url) as (ok_clients, _),
        ):
            await give_consent(full_clients)
            await give_consent(ok_clients)
            before_start = time.monotonic(), audio_sent(full_peers)
            started = await full_clients["facilitator"].call("recording:start")
            assert started["recording"]["id"] == full_id
            after_start = time.monotonic(), audio_sent(full_peers)
            ok_start = await ok_clients["facilitator"].call("recording:start")
            assert ok_start["recording"]["id"] == healthy_id
            ok_stems = recordings / healthy_id / "stems"
            await wait_until(after_start[0] + 3.0)

            filler = disk.fill()
            filled = time.monotonic(), audio_sent(full_peers)
            # every seat of the room is told, with the reason: the recording stopped, and
            # a notice says why (it may follow the snapshot that first shows the stop)
            for client in full_clients.values():
                snapshot = await client.wait(disk_full_notice, "the disk_full notice", timeout=15)
                assert snapshot["notice"]["state"] == "stopped", snapshot["notice"]
                assert snapshot["recording"]["state"] == "stopped"
                assert snapshot["recording"]["stop_reason"] == DISK_FULL
                assert snapshot["timer"]["running"] is False
            told = time.monotonic(), audio_sent(full_peers)
            print(f"room told {told[0] - filled[0]:.2f} s after the disk filled")

            # finalization is attempted, and fails for the same lack of space
            failed = await full_clients["facilitator"].wait(
                lambda s: (s["recording"]["finalize"] or {}).get("status") == "failed",
                "finalize failed",
                timeout=60,
            )
            reason = failed["recording"]["finalize"]["reason"]
            assert "No space left on device" in reason, reason
            assert failed["recording"]["stop_reason"] == DISK_FULL

            # each stem decodes, up to about where the disk filled: at least what was sent
            # from the start to the fill less a second of unsynced pages, at most what was
            # sent until the room was told
            for seat in TONES:
                seconds = stem_seconds(disk.path, seat)
                low = filled[1][seat] - after_start[1][seat] - 1.5
                high = told[1][seat] - before_start[1][seat] + 0.1
                assert low <= seconds <= high, (seat, low, seconds, high)
                audio = decode_stem(disk.path, seat)
                tone = dominant_frequency(audio[-RATE // 2 :])
                assert tone == pytest.approx(TONES[seat], abs=5)
            segments = {s.seat: s for s in read_recording(disk.path)}
            assert set(segments) == set(TONES)
            stem_lengths = {s: stem_seconds(disk.path, s) for s in TONES}

            # the server still answers; the other room still records, to its own disk
            async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
                assert resp.status == 200
            assert ok_clients["facilitator"].last["recording"]["state"] == "recording"
            size = (ok_stems / "a-01.opus").stat().st_size
            await wait_for(
                lambda: (ok_stems / "a-01.opus").stat().st_size > size + 4000,
                timeout=15,
                what="the healthy room's stem growing",
            )
            assert (await ok_clients["facilitator"].call("recording:stop"))["ok"]
            ready = await ok_clients["facilitator"].wait(
                lambda s: (s["recording"]["finalize"] or {}).get("status") == "ready",
                "the healthy room finalized",
                timeout=120,
            )
            assert ready["recording"]["stop_reason"] is None

        # an operator frees the space and finalizes again from the command line
        filler.unlink()
        code = await asyncio.to_thread(
            main, ["recording", "finalize", full_id, "--data-dir", str(data)]
        )
        assert code == 0
        store = await Store.open(server.settings.database_path)
        try:
            rec = await store.get_recording(full_id)
        finally:
            await store.close()
        assert rec is not None and rec.finalize_status == "ready"
        assert rec.status_reason == DISK_FULL
        duration = rec.finalized.duration_s if rec.finalized else None
        assert duration is not None
        # the recording clock ran from the start to the stop, which came before everyone
        # was told; the stems fit in it
        longest = max(stem_lengths.values())
        assert longest - 0.1 <= duration <= told[0] - before_start[0] + 0.1, (
            duration,
            stem_lengths,
        )
        metadata = json.loads((disk.path / "metadata.json").read_text())
        assert metadata["duration_s"] == pytest.approx(duration, abs=0.01)
        for seat in TONES:
            assert (disk.path / "stems" / f"{seat}.flac").stat().st_size > 1000


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, DISK_FULL),
        (errno.EDQUOT, DISK_FULL),
        (errno.EIO, WRITE_FAILED),
        (errno.EROFS, WRITE_FAILED),
    ],
)
def test_every_write_failure_has_a_stop_reason(code: int, reason: str) -> None:
    assert write_failure_reason(OSError(code, "refused")) == reason


@pytest.mark.slow
async def test_both_pages_say_the_server_stopped_the_recording(
    server: RunningServer, browser: Browser
) -> None:
    """The words on the pages for a recording the server stopped. The disk itself is
    the other test's; here the room is stopped the way the recorder stops it."""
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    try:
        await give_consent(clients)
        start = await clients["facilitator"].call("recording:start")
        assert start["ok"]
        async with (
            seat_page(
                browser, with_raw_audio(created["seats"]["a"]["url"]), "a", PHONE
            ) as participant,
            seat_page(
                browser,
                with_raw_audio(created["seats"]["facilitator"]["url"]),
                "facilitator",
                LAPTOP,
            ) as console,
        ):
            for seat in (participant, console):
                await expect(seat.page.locator("#rec-indicator")).to_have_attribute(
                    "data-state", "recording", timeout=EXPECT_MS
                )
            room = server.services.rooms.live(created["id"])
            assert room is not None
            assert await room.stop_for(DISK_FULL, start["recording"]["id"])
            await expect(participant.page.locator("#banner-text")).to_have_text(
                "The recording has stopped: the server ran out of storage space. "
                "Everything recorded until now is kept. "
                "Your facilitator will tell you what happens next.",
                timeout=EXPECT_MS,
            )
            await expect(console.page.locator("#banner-text")).to_contain_text(
                "The server stopped the recording: its disk is full."
            )
            await expect(console.page.locator("#rec-indicator")).to_have_attribute(
                "data-state", "stopped"
            )
            await participant.page.get_by_label("Language").select_option("es")
            await expect(participant.page.locator("#banner-text")).to_contain_text(
                "el servidor se quedó sin espacio de almacenamiento"
            )
            await screenshot(console.page, "console-disk-full")
            participant.watch.assert_clean()
            console.watch.assert_clean()
    finally:
        await close_clients(clients)


def _packets(payloads: list[bytes], first: int) -> list[RtpAudioPacket]:
    return [
        RtpAudioPacket(
            p, first + i, (first + i) * 960, 0x1234, 1000.0 + (first + i) * 0.02, None, False
        )
        for i, p in enumerate(payloads)
    ]


@pytest.mark.skipif(not PRIVATE_MOUNTS, reason="needs a private mount namespace")
@pytest.mark.parametrize(
    ("written_before", "free_pages"),
    [
        (0, 0),  # the disk is full before the stem's headers: no stem is left behind
        (50, 0),  # full after a second was written: that second stays, intact
        (50, 2),  # room for part of the next flush: the torn page is cut away
    ],
)
def test_a_stem_keeps_exactly_what_was_synced_when_the_disk_fills(
    tmp_path: Path, written_before: int, free_pages: int
) -> None:
    tone = encode_tone(3.0)
    with Tmpfs(tmp_path / "disk", "1m") as disk:
        stems = disk.path / "stems"
        segment = StemSegment(
            seat="a",
            index=1,
            conn_id="c1",
            ssrc=0x1234,
            opus_path=stems / "a-01.opus",
            timing_path=stems / "a-01.timing.jsonl",
        )
        stems.mkdir()
        for packet in _packets(tone[:written_before], 0):
            segment.add(packet, packet.arrival - 1000.0)
        if written_before:
            segment.flush()
        synced = segment.opus_path.stat().st_size if written_before else 0
        filler = disk.fill()
        if free_pages:
            os.truncate(filler, filler.stat().st_size - free_pages * 4096)
        for packet in _packets(tone[written_before:], written_before):
            segment.add(packet, packet.arrival - 1000.0)
        with pytest.raises(OSError) as failure:
            segment.flush()
        assert write_failure_reason(failure.value) == DISK_FULL
        assert segment.finished
        segment.flush()  # abandoned: writes nothing, raises nothing
        if not written_before:
            assert not segment.opus_path.exists() and not segment.timing_path.exists()
            return
        data = segment.opus_path.read_bytes()
        assert len(data) == synced
        pages = read_pages(data)
        assert sum(p.size for p in pages) == len(data)
        assert all(ogg.crc32(_zero_crc(data, p.offset, p.size)) == p.crc for p in pages)
        assert len(decode_ogg(str(segment.opus_path))) == written_before * 960
        assert read_segment(segment.timing_path).packets[written_before - 1].granule_end == (
            written_before * 960
        )


def _zero_crc(data: bytes, offset: int, size: int) -> bytes:
    page = bytearray(data[offset : offset + size])
    page[22:26] = b"\0\0\0\0"
    return bytes(page)
