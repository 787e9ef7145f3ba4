"""The media plane with real aiortc peers on loopback: forwarding, stems, timing, lifecycle."""

from __future__ import annotations

import time

import numpy as np
import pytest

from storyroom.recording.timeline import read_recording
from support.media import (
    RATE,
    TONES,
    SeatPeer,
    ToneTrack,
    audio_sent,
    decode_stem,
    dominant_frequency,
    start_recording,
    stop_recording,
    tone_room,
)
from support.polling import wait_for, wait_until
from support.server import RunningServer, SeatClient


async def test_each_seat_hears_exactly_the_two_others(server: RunningServer) -> None:
    async with tone_room(server.url) as (clients, peers):
        for seat, peer in peers.items():
            others = sorted(s for s in TONES if s != seat)
            assert sorted(peer.mids.values()) == others
        await wait_for(
            lambda: all(
                len(p.samples_from(s)) > RATE * 1.5 for p in peers.values() for s in p.mids.values()
            ),
            timeout=20,
            what="1.5 s of audio on every received track",
        )
        for seat, peer in peers.items():
            assert set(peer.received) == {s for s in TONES if s != seat}
            for source in peer.received:
                freq = dominant_frequency(peer.samples_from(source, last_seconds=1.0))
                assert freq == pytest.approx(TONES[source], abs=5), (seat, source, freq)
        # the answer asked for archival Opus
        ack_sdp = peers["a"].pc.remoteDescription.sdp
        assert "useinbandfec=1" in ack_sdp
        assert "maxaveragebitrate=96000" in ack_sdp
        # levels reach the facilitator about four times a second
        f = clients["facilitator"]
        await wait_for(lambda: sum(1 for e, _ in f.events if e == "media:levels") >= 4, timeout=5)
        levels = [d for e, d in f.events if e == "media:levels"][-1]
        assert set(levels["levels"]) == set(TONES)
        assert all(0 < v <= 1 for v in levels["levels"].values())


async def test_recording_writes_stems_that_align(server: RunningServer) -> None:
    async with tone_room(server.url) as (clients, peers):
        # a stem holds what its seat sent while recording: bounded by the audio sent
        # before and after each call, however far a busy machine lets senders fall behind
        sent = [audio_sent(peers)]
        rec_dir = await start_recording(server.settings.recordings_dir, clients)
        sent.append(audio_sent(peers))
        # a burst from a and b at the same wall instant
        burst = time.time() + 1.5
        peers["a"].tone.bursts.append(burst)
        peers["b"].tone.bursts.append(burst)
        await wait_until(burst + 1.0, clock=time.time)
        sent.append(audio_sent(peers))
        await stop_recording(clients, rec_dir)
        sent.append(audio_sent(peers))
        segments = {s.seat: s for s in read_recording(rec_dir)}
        assert set(segments) == set(TONES)
        onsets = {}
        for seat, segment in segments.items():
            audio = decode_stem(rec_dir, seat)
            # the stem holds as many samples as its packets say
            assert len(audio) == segment.packets[-1].granule_end
            low = sent[2][seat] - sent[1][seat] - 0.5  # less what was still on its way
            high = sent[3][seat] - sent[0][seat]
            assert low < len(audio) / RATE < high, (seat, low, len(audio) / RATE, high)
            quiet = audio[: int(RATE * 0.5)]
            assert dominant_frequency(quiet) == pytest.approx(TONES[seat], abs=5)
            if seat in ("a", "b"):
                loud = np.flatnonzero(np.abs(audio) > 0.5)
                assert len(loud), seat
                onsets[seat] = segment.rec_time(int(loud[0]))
        assert onsets["a"] is not None and onsets["b"] is not None
        assert abs(onsets["a"] - onsets["b"]) < 0.020, onsets


async def test_reconnect_makes_two_segments_and_an_explicit_gap(server: RunningServer) -> None:
    async with tone_room(server.url) as (clients, peers):
        rec_dir = await start_recording(server.settings.recordings_dir, clients)
        await wait_for(lambda: (rec_dir / "stems" / "b-01.opus").exists(), what="b's first stem")
        await peers["b"].close()
        # b drops (socket and audio) and comes back with a new connection
        await clients["b"].close()
        await clients["facilitator"].wait(lambda s: not s["seats"]["b"]["connected"], "b left")
        again = SeatClient(server.url, clients["b"].token)
        await again.connect()
        clients["b"] = again
        peers["b"] = SeatPeer(again, ToneTrack(TONES["b"]))
        await peers["b"].connect()
        await wait_for(lambda: (rec_dir / "stems" / "b-02.opus").exists(), what="b's second stem")
        timing = rec_dir / "stems" / "b-02.timing.jsonl"
        await wait_for(lambda: timing.exists() and timing.stat().st_size > 2000, what="b-02 timing")
        await stop_recording(clients, rec_dir)
        segments = [s for s in read_recording(rec_dir) if s.seat == "b"]
        assert [s.index for s in segments] == [1, 2]
        first, second = segments
        assert first.events[-1]["type"] == "close"
        assert first.events[-1]["reason"] in ("replaced", "grace_expired", "client_left")
        gap = second.runs[0].rec_time(second.runs[0].granule_start) - first.runs[-1].rec_time(
            first.runs[-1].granule_end
        )
        assert gap > 0, "the reconnect leaves a gap on the recording clock"
        for seg in segments:
            audio = decode_stem(rec_dir, "b", seg.index)
            assert dominant_frequency(audio) == pytest.approx(TONES["b"], abs=5)


async def test_link_stats_reach_the_facilitator(server: RunningServer) -> None:
    async with tone_room(server.url) as (clients, _):
        f = clients["facilitator"]

        def stats_with_rtt() -> dict[str, object] | None:
            for event, data in reversed(f.events):
                if event == "media:levels" and all(
                    data["stats"].get(s, {}).get("rtt_ms") is not None for s in TONES
                ):
                    return data
            return None

        data = await wait_for(stats_with_rtt, timeout=15, what="round-trip times for every seat")
        for seat in TONES:
            stats = data["stats"][seat]
            assert stats["loss"] == 0.0  # loopback loses nothing
            assert 0 <= stats["jitter_ms"] < 50
            assert 0 <= stats["rtt_ms"] < 200
            assert stats["packets"] > 50


async def test_pause_cuts_the_stem_and_breaks_the_run(server: RunningServer) -> None:
    async with tone_room(server.url) as (clients, peers):
        f = clients["facilitator"]
        tone = peers["a"].tone
        # a's audio sent just before and after each call bounds what a's stem can hold
        sent = [tone.sent_s]
        rec_dir = await start_recording(server.settings.recordings_dir, clients)
        sent.append(tone.sent_s)
        await wait_until(time.monotonic() + 1.0)
        sent.append(tone.sent_s)
        pause_began = time.monotonic()
        assert (await f.call("recording:pause"))["ok"]
        pausing = time.monotonic() - pause_began
        sent.append(tone.sent_s)
        await wait_until(time.monotonic() + 2.0)
        sent.append(tone.sent_s)
        assert (await f.call("recording:resume"))["ok"]
        sent.append(tone.sent_s)
        await wait_until(time.monotonic() + 1.0)
        sent.append(tone.sent_s)
        await stop_recording(clients, rec_dir)
        sent.append(tone.sent_s)
        segment = next(s for s in read_recording(rec_dir) if s.seat == "a")
        kinds = [e["type"] for e in segment.events]
        assert kinds[:1] == ["open"] and "pause" in kinds and "resume" in kinds
        assert "gap" not in kinds  # what was not recorded during the pause is not "lost"
        assert len(segment.runs) == 2
        audio = decode_stem(rec_dir, "a")
        # what was sent while recording (about 2 s), the 2 s pause cut out; less what was
        # on its way at the pause and at the stop
        low = (sent[2] - sent[1]) + (sent[6] - sent[5]) - 0.4
        high = (sent[3] - sent[0]) + (sent[7] - sent[4])
        assert low < len(audio) / RATE < high, (low, len(audio) / RATE, high)
        # The clock stands still while paused: the second run starts where the first
        # ended (±30 ms), later only by how long after the resume a's audio came back
        # (on a busy machine its sender lags). The room's clock stops when the server
        # begins the pause, the recorder when the pause is stored: the first run may
        # reach past the stop by that handling time, which the pause call's length bounds.
        first, second = segment.runs
        step = second.rec_time(second.granule_start) - first.rec_time(first.granule_end)
        resumed = next(e["at"] for e in segment.events if e["type"] == "resume")
        back = next(p for p in segment.packets if p.granule_start == second.granule_start)
        waited = back.arrival - resumed
        assert waited - pausing - 0.03 < step < waited + 0.03, (step, waited, pausing)
