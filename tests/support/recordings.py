"""Synthetic recordings on disk, written by the recorder's own classes.

:func:`make_recording` drives :class:`storyroom.recording.recorder.StemSegment` with
:class:`RtpAudioPacket` objects exactly as the live recorder does (real Opus packets,
RTP sequence numbers and timestamps, arrival times with network jitter, flushes twice a
second of simulated time), so the stems and timing logs are in the real format. The
recording clock, pauses, reconnects, lost packets and senders that go quiet are
simulated; `recording.jsonl` gets the same lines `RecordingFiles` writes.

Used by `tests/test_finalize.py` (short recordings, every packet encoded from a known
signal) and `bench/finalize.py` (long recordings from a loop of pre-encoded speech).
"""

from __future__ import annotations

import fractions
import heapq
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from storyroom.finalize.contracts import ConsentFlags, Cue, FinalizeInput, Marker
from storyroom.media.aiortc_internals import RtpAudioPacket
from storyroom.recording.recorder import FLUSH_INTERVAL, StemSegment
from storyroom.status import RecordingState

RATE = 48_000
FRAME = 960  # 20 ms
FRAME_S = FRAME / RATE
START_WALL = 1_795_292_634.0  # 2026-11-21 20:23:54 UTC


@dataclass
class Connection:
    """One connection of a seat: a segment. Times are on the recording clock."""

    start: float
    end: float
    lost: list[tuple[float, float]] = field(default_factory=list)
    """Spans whose packets are lost in transit (sequence numbers skipped)."""
    quiet: list[tuple[float, float]] = field(default_factory=list)
    """Spans the sender sends nothing while its RTP clock runs on (e.g. DTX, mute)."""
    reason: str = "client_left"
    """How the segment closes if it ends before the recording stops."""


Signal = Callable[[np.ndarray], np.ndarray]
"""Samples for an array of recording-clock times (seconds)."""


@dataclass
class SeatScript:
    seat: str
    connections: list[Connection]
    signal: Signal | None = None
    """Encode exactly this signal (tests)."""
    loop: list[bytes] | None = None
    """Or: replay these 20 ms packets in a loop (benchmarks: encode once)."""
    delay: float = 0.004
    """Smallest one-way delay, s."""
    jitter: float = 0.006
    """Mean extra delay (exponential, capped at 10x), s."""
    bitrate: int = 48_000


@dataclass
class Recording:
    path: Path
    duration: float
    started_at: float
    pauses: list[tuple[float, float]]


class _Clock:
    """The room's recording clock: wall time minus the paused stretches."""

    def __init__(self, start_wall: float, pauses: list[tuple[float, float]]) -> None:
        self.start = start_wall
        self.pauses = sorted(pauses)  # (rec time of the pause, wall seconds paused)

    def wall(self, rec: float) -> float:
        """Wall time at which the clock reaches `rec` (the start of a pause there)."""
        return self.start + rec + sum(length for at, length in self.pauses if at < rec)

    def rec(self, wall: float) -> tuple[float, bool]:
        """(clock reading, paused?) at a wall time."""
        elapsed = wall - self.start
        for at, length in self.pauses:
            if elapsed <= at:
                break
            if elapsed < at + length:
                return at, True
            elapsed -= length
        return elapsed, False


def _encoder(bitrate: int) -> Any:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = RATE
    encoder.layout = "mono"
    encoder.format = "flt"
    encoder.bit_rate = bitrate
    encoder.time_base = fractions.Fraction(1, RATE)
    encoder.options = {"application": "voip", "fec": "1", "packet_loss": "5"}
    return encoder


def encode_packets(samples: np.ndarray, bitrate: int = 48_000) -> list[bytes]:
    """20 ms Opus packets (libopus, as a browser would send) for mono float samples."""
    encoder = _encoder(bitrate)
    packets: list[bytes] = []
    total = len(samples) // FRAME * FRAME
    for start in range(0, total, FRAME):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[None, start : start + FRAME], dtype=np.float32),
            format="flt",
            layout="mono",
        )
        frame.sample_rate = RATE
        frame.pts = start
        packets += [bytes(p) for p in encoder.encode(frame)]
    return packets


@dataclass(order=True)
class _Arrival:
    wall: float
    order: int
    seat: str = field(compare=False)
    connection: int = field(compare=False)
    kind: str = field(compare=False)  # "packet" | "close"
    payload: bytes = field(default=b"", compare=False)
    seq: int = field(default=0, compare=False)
    ts: int = field(default=0, compare=False)
    ssrc: int = field(default=0, compare=False)


def _arrivals(
    script: SeatScript, number: int, clock: _Clock, rng: random.Random, counter: Iterator[int]
) -> Iterator[_Arrival]:
    """One connection's packets in arrival order (jitter reorders them; a small heap
    releases each once no later-captured packet can arrive before it)."""
    connection = script.connections[number]
    ssrc = rng.getrandbits(32)
    seq = rng.getrandbits(16)
    ts = rng.getrandbits(32)
    wall_start = clock.wall(connection.start)
    wall_end = clock.wall(connection.end)
    frames = round((wall_end - wall_start) / FRAME_S)
    encoder = _encoder(script.bitrate) if script.signal is not None else None
    loop_at = rng.randrange(len(script.loop)) if script.loop else 0
    pending: list[_Arrival] = []
    for index in range(frames):
        capture_start = wall_start + index * FRAME_S
        capture_end = capture_start + FRAME_S
        rec_start, paused = clock.rec(capture_start + 1e-9)
        if encoder is not None:
            assert script.signal is not None
            # while paused the sender goes on (unrecorded): its signal carries on from
            # where the clock stopped
            at = rec_start + (capture_start - clock.wall(rec_start) if paused else 0.0)
            pcm = script.signal(at + np.arange(FRAME) / RATE).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(pcm[None], format="flt", layout="mono")
            frame.sample_rate = RATE
            frame.pts = index * FRAME
            packets = [bytes(p) for p in encoder.encode(frame)]
            payload = packets[0] if packets else b""
        else:
            assert script.loop is not None
            payload = script.loop[(loop_at + index) % len(script.loop)]
        quiet = any(a <= rec_start < b for a, b in connection.quiet)
        lost = any(a <= rec_start < b for a, b in connection.lost)
        if not quiet:
            if payload and not lost:
                extra = min(rng.expovariate(1 / script.jitter), 10 * script.jitter)
                arrival = capture_end + script.delay + extra
                heapq.heappush(
                    pending,
                    _Arrival(
                        arrival,
                        next(counter),
                        script.seat,
                        number,
                        "packet",
                        payload,
                        seq,
                        ts,
                        ssrc,
                    ),
                )
            seq += 1
        ts += FRAME
        while pending and pending[0].wall <= capture_end + script.delay:
            yield heapq.heappop(pending)
    while pending:
        yield heapq.heappop(pending)
    yield _Arrival(wall_end + script.delay + 0.05, next(counter), script.seat, number, "close")


def make_recording(
    path: Path,
    seats: list[SeatScript],
    duration: float,
    pauses: list[tuple[float, float]] | None = None,
    *,
    seed: int = 1,
    start_wall: float = START_WALL,
    crash_at: float | None = None,
    recording_id: str = "rec_0123456789abcdef",
    session_id: str = "ses_0123456789abcdef",
) -> Recording:
    """Write `path/recording.jsonl` and `path/stems/*` for a take of `duration` seconds
    (recording clock). `pauses`: (clock reading, wall seconds) pairs. `crash_at`: stop
    writing at this clock reading without closing anything, as a SIGKILL would."""
    pauses = pauses or []
    clock = _Clock(start_wall, pauses)
    rng = random.Random(seed)
    counter = iter(range(1 << 62))
    (path / "stems").mkdir(parents=True)
    log_lines: list[str] = []

    def log(kind: str, wall: float, **fields: Any) -> None:
        rec, _ = clock.rec(wall)
        line = {"type": kind, "at": round(wall, 6), "rec": round(rec, 6), **fields}
        log_lines.append(json.dumps(line))

    log("start", start_wall, recording=recording_id, session=session_id, take=1)
    streams: list[Iterator[_Arrival]] = []
    for script in seats:
        for number in range(len(script.connections)):
            streams.append(_arrivals(script, number, clock, rng, counter))
    control: list[_Arrival] = []
    for at, length in pauses:
        wall = clock.wall(at)
        control.append(_Arrival(wall, next(counter), "", 0, "pause"))
        control.append(_Arrival(wall + length, next(counter), "", 0, "resume"))
    stop_wall = clock.wall(duration)
    end_wall = stop_wall if crash_at is None else clock.wall(crash_at)
    control.append(_Arrival(end_wall, next(counter), "", 0, "stop"))
    streams.append(iter(sorted(control)))

    open_segments: dict[tuple[str, int], StemSegment] = {}
    all_segments: list[StemSegment] = []
    counts: dict[str, int] = {}
    next_flush = start_wall + FLUSH_INTERVAL

    def flush() -> None:
        for segment in all_segments:
            segment.flush()
        all_segments[:] = [s for s in all_segments if not s.finished]
        with open(path / "recording.jsonl", "a", encoding="utf-8") as f:
            if log_lines:
                f.write("\n".join(log_lines) + "\n")
        log_lines.clear()

    paused = False
    for item in heapq.merge(*streams):
        while item.wall >= next_flush:
            flush()
            next_flush += FLUSH_INTERVAL
        rec, _ = clock.rec(item.wall)
        key = (item.seat, item.connection)
        if item.kind == "stop":
            if crash_at is not None:
                # what reached the disk at the last flush is all there is: drop the
                # process's open files without writing anything more
                for segment in all_segments:
                    if segment.writer is not None:
                        segment.writer._file.close()
                    if segment.timing is not None:
                        segment.timing.close()
                return Recording(path, duration, start_wall, pauses)
            for (seat, _), segment in open_segments.items():
                segment.event("close", reason="stopped", at=item.wall, rec=round(rec, 6))
                with segment.lock:
                    segment.closed = True
                log("segment_close", item.wall, seat=seat, segment=segment.index, reason="stopped")
            open_segments.clear()
            log("stop", item.wall)
            break
        if item.kind in ("pause", "resume"):
            paused = item.kind == "pause"
            for segment in open_segments.values():
                segment.event(item.kind, at=item.wall, rec=round(rec, 6))
                if item.kind == "resume":
                    segment.resumed()
            log(item.kind, item.wall)
            continue
        if item.kind == "close":
            segment = open_segments.pop(key, None)
            if segment is not None:
                reason = (
                    next(s for s in seats if s.seat == item.seat)
                    .connections[item.connection]
                    .reason
                )
                segment.event("close", reason=reason, at=item.wall, rec=round(rec, 6))
                with segment.lock:
                    segment.closed = True
                log(
                    "segment_close", item.wall, seat=item.seat, segment=segment.index, reason=reason
                )
            continue
        if paused:
            continue
        segment = open_segments.get(key)
        if segment is None:
            index = counts[item.seat] = counts.get(item.seat, 0) + 1
            name = f"{item.seat}-{index:02d}"
            segment = StemSegment(
                seat=item.seat,
                index=index,
                conn_id=f"conn-{item.seat}-{item.connection}",
                ssrc=item.ssrc,
                opus_path=path / "stems" / f"{name}.opus",
                timing_path=path / "stems" / f"{name}.timing.jsonl",
            )
            segment.event(
                "open",
                seat=item.seat,
                segment=index,
                ssrc=item.ssrc,
                at=item.wall,
                rec=round(rec, 6),
            )
            open_segments[key] = segment
            all_segments.append(segment)
            log("segment_open", item.wall, seat=item.seat, segment=index, file=f"stems/{name}.opus")
        packet = RtpAudioPacket(
            payload=item.payload,
            sequence_number=item.seq & 0xFFFF,
            timestamp=item.ts & 0xFFFF_FFFF,
            ssrc=item.ssrc,
            arrival=item.wall,
            audio_level=None,
            marker=False,
        )
        segment.add(packet, rec)
    flush()
    return Recording(path, duration, start_wall, pauses)


def finalize_input(
    recording: Recording,
    cues: Iterable[Mapping[str, Any]] = (),
    markers: Iterable[Mapping[str, Any]] = (),
    **overrides: Any,
) -> FinalizeInput:
    """A FinalizeInput for a made recording, as the server would build it; `cues` and
    `markers` as `{"seq", "question_id", "text", "rec_time"}` / `{"seq", "label",
    "rec_time"}`."""
    values: dict[str, Any] = {
        "recording_id": "rec_0123456789abcdef",
        "session_id": "ses_0123456789abcdef",
        "title": "Una conversación: neighbours",
        "language": "es",
        "take": 1,
        "started_at": recording.started_at,
        "status": RecordingState.STOPPED,
        "seats": {"a": "Ana", "b": "Ben", "facilitator": "Fay"},
        "consent": {
            "a": ConsentFlags(record=True, archive=True, public=False),
            "b": ConsentFlags(record=True, archive=True, public=True),
        },
        "cues": tuple(Cue(**cue) for cue in cues),
        "markers": tuple(Marker(**marker) for marker in markers),
        "duration_s": recording.duration,
        "software": "storyroom 0.1.0",
    }
    values.update(overrides)
    return FinalizeInput(**values)


# -- signals ---------------------------------------------------------------------------------


def tone(freq: float, level: float, start: float = 0.0, end: float = 1e9) -> Signal:
    def signal(t: np.ndarray) -> np.ndarray:
        inside = (t >= start) & (t < end)
        return np.where(inside, level * np.sin(2 * np.pi * freq * t), 0.0)

    return signal


def mixed(*signals: Signal) -> Signal:
    def signal(t: np.ndarray) -> np.ndarray:
        return np.sum([s(t) for s in signals], axis=0)

    return signal


def speech_like(seconds: float, seed: int, talk: list[tuple[float, float]]) -> np.ndarray:
    """Speech-shaped audio: syllables (voiced harmonics with formant-like emphasis plus a
    little low-passed breath noise, 4-6 per second, each rising and falling) in phrases
    with pauses between them, only inside the `talk` spans; faint room noise throughout.
    Speech stretches measure about -24 LUFS with peaks near -6 dBFS, like a browser mic."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = rng.normal(0, 10 ** (-66 / 20), n)  # room noise
    f0_base = rng.uniform(105, 210)
    smooth = np.ones(6) / 6  # breath noise: most of its energy below ~6 kHz
    for span_start, span_end in talk:
        at = span_start
        while at < span_end:
            phrase_end = min(span_end, at + rng.uniform(1.5, 5.0))
            while at < phrase_end:
                length = rng.uniform(0.12, 0.26)
                start, stop = int(at * RATE), min(n, int((at + length) * RATE))
                if stop <= start:
                    break
                t = np.arange(stop - start) / RATE
                glide = 1 + 0.1 * np.sin(np.pi * t / length)
                f0 = f0_base * (1 + rng.uniform(-0.15, 0.15)) * glide
                phase = 2 * np.pi * np.cumsum(f0) / RATE
                formants = rng.uniform([500, 1200, 2400], [900, 2000, 3200])
                voiced = np.zeros(len(t))
                for k in range(1, 40):
                    freq = k * f0.mean()
                    if freq > 7000:
                        break
                    weight = sum(np.exp(-(((freq - f) / 200) ** 2)) for f in formants) + 0.1
                    voiced += weight / k**0.5 * np.sin(k * phase + rng.uniform(0, 6.3))
                voiced /= max(float(np.sqrt(np.mean(voiced**2))), 1e-9)
                breath = np.convolve(rng.normal(0, 0.2, len(t)), smooth, mode="same")
                envelope = np.sin(np.pi * t / length) ** 2
                level = 10 ** (rng.uniform(-25, -14) / 20)
                out[start:stop] += level * envelope * (voiced + breath)
                at += length + rng.uniform(0.02, 0.12)
            at = phrase_end + rng.uniform(0.3, 1.2)
    return np.clip(out, -0.98, 0.98).astype(np.float32)
