"""The recorder: a subscriber to each seat's encoded packets that writes them, undecoded,
into one Ogg Opus stem per seat and connection, with a timing log beside it.

Files (named in :mod:`storyroom.recording.layout`) under `<data dir>/recordings/<id>/`:
- `recording.jsonl` — the recording clock: start, pause, resume, stop, interrupted.
- `stems/<seat>-<NN>.opus` — Ogg Opus, granule = sample position within the segment.
- `stems/<seat>-<NN>.timing.jsonl` — one JSON line per packet
  `[seq, rtp_ts, arrival, rec_time, granule_end, samples]` (extended seq and
  timestamp, no 16/32-bit wrap), and objects for events: open, gap, pause, resume,
  discontinuity, close.

Every `at` and `arrival` is on `clock.steady()` (a Unix-looking time that never
jumps), so a stepped wall clock cannot tear the mapping from packets to the
recording clock.

Packets are buffered on the loop and written every `FLUSH_INTERVAL` by one worker
thread (fsync each time), so a killed process loses at most about a second. Nothing
is decoded. When the disk refuses a write (full, over quota, I/O error) the
recording's files are cut back to what was durably written and the room is stopped
with a reason (`disk_full`, `write_failed`); other rooms keep recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from storyroom.clock import steady, wall
from storyroom.media.aiortc_internals import RtpAudioPacket
from storyroom.recording import layout
from storyroom.recording.layout import RecordingEvent, SegmentEvent, recording_dir
from storyroom.recording.oggopus import OggOpusWriter, opus_packet_samples
from storyroom.room.rooms import CloseReason, Room
from storyroom.status import LIVE_STATES, RecordingState, StopReason
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
# Lost packets shorter than this are filled (PLC) so the stem keeps RTP time;
# a longer silence from the sender is a discontinuity, placed by the timing log.
MAX_FILL_SAMPLES = 48_000 * 5

DISK_FULL = StopReason.DISK_FULL
WRITE_FAILED = StopReason.WRITE_FAILED


def write_failure_reason(exc: OSError) -> str:
    """The stop reason the room is given for a failed write."""
    return DISK_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else WRITE_FAILED


PacketTiming = tuple[int, int, float, float, int, int]
"""A packet's `[seq, rtp_ts, arrival, rec_time, granule_end, samples]` in the timing log."""


def packet_line(timing: PacketTiming) -> str:
    """The timing log's line for one packet: the JSON list `json.dumps` would write
    (times rounded to the microsecond), formatted on the worker thread for a fraction
    of its cost, not on the loop per packet."""
    seq, ts, arrival, rec_time, end, samples = timing
    return f"[{seq}, {ts}, {round(arrival, 6)!r}, {round(rec_time, 6)!r}, {end}, {samples}]"


@dataclass(slots=True)
class _Unwrapper:
    """Extends 16-bit sequence numbers / 32-bit timestamps into monotonic integers."""

    bits: int
    last: int | None = None

    def __call__(self, value: int) -> int:
        modulus = 1 << self.bits
        if self.last is None:
            self.last = value
            return value
        delta = (value - self.last) % modulus
        if delta >= modulus // 2:
            delta -= modulus
        self.last += delta
        return self.last


@dataclass(slots=True)
class StemSegment:
    """One seat's audio over one connection, within one recording. Owner: RecordingFiles."""

    seat: str
    index: int
    conn_id: str
    ssrc: int
    opus_path: Path
    timing_path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending_lines: list[str | PacketTiming] = field(default_factory=list)
    """Event lines, and packets' timing still to be written as lines (by the worker)."""
    pending_packets: list[tuple[bytes, int]] = field(default_factory=list)
    writer: OggOpusWriter | None = None
    timing: TextIO | None = None
    closed: bool = False
    finished: bool = False
    seq: _Unwrapper = field(default_factory=lambda: _Unwrapper(16))
    ts: _Unwrapper = field(default_factory=lambda: _Unwrapper(32))
    last_seq: int | None = None
    granule_end: int = 0
    # granule = rtp_ts - ts_base while the run is continuous
    ts_base: int | None = None
    packets: int = 0
    after_pause: bool = False

    def event(self, kind: str, **fields: Any) -> None:
        with self.lock:
            self.pending_lines.append(json.dumps({"type": kind, **fields}))

    def add(self, packet: RtpAudioPacket, rec_time: float) -> None:
        """On the loop: place one packet in the stem and the timing log (memory only)."""
        samples = opus_packet_samples(packet.payload)
        if samples == 0:
            return
        seq = self.seq(packet.sequence_number)
        ts = self.ts(packet.timestamp)
        lines: list[str | PacketTiming] = []
        if self.last_seq is not None and seq <= self.last_seq:
            return  # duplicate or late reordered packet: already past it
        if self.after_pause:
            # packets the sender sent while we were paused were not lost: not a gap
            self.after_pause = False
        elif self.last_seq is not None and seq > self.last_seq + 1:
            lines.append(
                json.dumps(
                    {
                        "type": SegmentEvent.GAP,
                        "after_seq": self.last_seq,
                        "lost": seq - self.last_seq - 1,
                        "at": packet.arrival,
                        "rec": round(rec_time, 6),
                    }
                )
            )
        if self.ts_base is None:
            self.ts_base = ts - self.granule_end
        start = ts - self.ts_base
        if start < self.granule_end or start - self.granule_end > MAX_FILL_SAMPLES:
            # timestamps went backwards or jumped far: continue the stem seamlessly
            # and say so; the timing log still places the packet on the clock.
            if self.packets:
                lines.append(
                    json.dumps(
                        {"type": SegmentEvent.DISCONTINUITY, "seq": seq, "rec": round(rec_time, 6)}
                    )
                )
            self.ts_base = ts - self.granule_end
            start = self.granule_end
        end = start + samples
        self.granule_end = end
        self.last_seq = seq
        self.packets += 1
        lines.append((seq, ts, packet.arrival, rec_time, end, samples))
        with self.lock:
            self.pending_lines.extend(lines)
            self.pending_packets.append((packet.payload, end))

    def resumed(self) -> None:
        """After a pause the stem continues without the paused stretch."""
        self.ts_base = None
        self.after_pause = True

    def flush(self) -> None:
        """Worker thread: write what is buffered; create the files on first use.

        An OSError leaves the segment as :meth:`abandon` would and is raised again."""
        try:
            self._flush()
        except OSError:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Worker thread: the disk refused a write. Keep what is durably written (the stem
        up to its last synced page; a torn last timing line is skipped by readers), drop
        what is buffered, write nothing more."""
        with self.lock:
            self.pending_lines, self.pending_packets = [], []
            self.closed = True
        if self.finished:
            return
        self.finished = True
        if self.timing is not None:
            with contextlib.suppress(OSError):
                self.timing.close()
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.abandon()
        else:
            # the headers never made it to disk: there is no audio, leave no empty stem
            self.opus_path.unlink(missing_ok=True)
            self.timing_path.unlink(missing_ok=True)

    def _flush(self) -> None:
        with self.lock:
            lines, self.pending_lines = self.pending_lines, []
            packets, self.pending_packets = self.pending_packets, []
            closing = self.closed and not self.finished
        if self.finished:
            return
        if self.writer is None:
            self.opus_path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = OggOpusWriter(
                self.opus_path,
                serial=(hash((self.seat, self.index, self.conn_id)) & 0x7FFFFFFF) or 1,
                comments={"STORYROOM_SEAT": self.seat, "STORYROOM_SEGMENT": str(self.index)},
            )
            self.timing = open(self.timing_path, "x", encoding="utf-8")
        assert self.timing is not None
        for payload, granule in packets:
            self.writer.add_packet(payload, granule)
        if lines:
            self.timing.write(
                "\n".join(line if isinstance(line, str) else packet_line(line) for line in lines)
                + "\n"
            )
        _sync(self.timing)
        if closing:
            self.writer.close()
            self.timing.close()
            self.finished = True
        else:
            self.writer.flush()


class RecordingFiles:
    """The files of one running recording. Owner: Recorder."""

    def __init__(self, root: Path, room: Room) -> None:
        assert room.recording is not None
        self.recording_id = room.recording.id
        self.dir = root
        self.room = room
        self.segments: dict[str, StemSegment] = {}
        self.all_segments: list[StemSegment] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.pending_events: list[str] = []
        self.state = RecordingState.RECORDING
        self.closed = False
        # set by the worker thread when the disk refuses a write; nothing is written after
        self.failure: OSError | None = None
        self.failure_reported = False

    def event(self, kind: str, **fields: Any) -> None:
        now = steady()
        line = json.dumps(
            {"type": kind, "at": now, "rec": round(self.room.elapsed(now), 6), **fields}
        )
        with self.lock:
            self.pending_events.append(line)

    def on_packet(self, seat: str, conn_id: str, packet: RtpAudioPacket) -> None:
        if self.state is not RecordingState.RECORDING or self.failure is not None:
            return
        segment = self.segments.get(seat)
        if segment is None or segment.conn_id != conn_id or segment.ssrc != packet.ssrc:
            if segment is not None:
                self.close_segment(seat, CloseReason.REPLACED)
            segment = self.open_segment(seat, conn_id, packet.ssrc)
        segment.add(packet, self.room.elapsed(packet.arrival))

    def open_segment(self, seat: str, conn_id: str, ssrc: int) -> StemSegment:
        index = self.counts.get(seat, 0) + 1
        self.counts[seat] = index
        opus = layout.segment_opus(seat, index)
        segment = StemSegment(
            seat=seat,
            index=index,
            conn_id=conn_id,
            ssrc=ssrc,
            opus_path=self.dir / opus,
            timing_path=self.dir / layout.segment_timing(seat, index),
        )
        now = steady()
        segment.event(
            SegmentEvent.OPEN,
            seat=seat,
            segment=index,
            ssrc=ssrc,
            at=now,
            rec=round(self.room.elapsed(now), 6),
        )
        self.segments[seat] = segment
        self.all_segments.append(segment)
        self.event(RecordingEvent.SEGMENT_OPEN, seat=seat, segment=index, file=opus)
        return segment

    def close_segment(self, seat: str, reason: str) -> None:
        segment = self.segments.pop(seat, None)
        if segment is None:
            return
        now = steady()
        segment.event(
            SegmentEvent.CLOSE, reason=reason, at=now, rec=round(self.room.elapsed(now), 6)
        )
        with segment.lock:
            segment.closed = True
        self.event(RecordingEvent.SEGMENT_CLOSE, seat=seat, segment=segment.index, reason=reason)

    def set_state(self, state: RecordingState) -> None:
        previous, self.state = self.state, state
        now = steady()
        rec = round(self.room.elapsed(now), 6)
        if state is RecordingState.PAUSED:
            for segment in self.segments.values():
                segment.event(SegmentEvent.PAUSE, at=now, rec=rec)
        elif state is RecordingState.RECORDING and previous is RecordingState.PAUSED:
            for segment in self.segments.values():
                segment.event(SegmentEvent.RESUME, at=now, rec=rec)
                segment.resumed()

    def flush(self) -> None:
        """Worker thread. The events log is opened per flush (append), so late events
        after the last segment closed still land. The first OSError from any file ends
        the recording's writing: every stem is cut back to its last synced page and
        `failure` is set for the loop to stop the room."""
        with self.lock:
            events, self.pending_events = self.pending_events, []
        if self.failure is not None:
            self.all_segments = []
            return
        try:
            (self.dir / layout.STEMS).mkdir(parents=True, exist_ok=True)
            if events:
                _append_durably(self.dir / layout.RECORDING_LOG, events)
            for segment in list(self.all_segments):
                try:
                    segment.flush()
                except ValueError:
                    log.exception("could not write stem %s", segment.opus_path.name)
        except OSError as exc:
            log.error("recording %s: write failed, stopping it: %s", self.recording_id, exc)
            self.failure = exc
            for segment in self.all_segments:
                segment.abandon()
            with self.lock:
                self.pending_events = []
        self.all_segments = [s for s in self.all_segments if not s.finished]

    @property
    def done(self) -> bool:
        with self.lock:
            return self.closed and not self.all_segments and not self.pending_events


class Recorder:
    """Follows every room's recording state and writes stems. Owner: the app."""

    def __init__(self, recordings_root: Path) -> None:
        self.root = recordings_root
        self.active: dict[str, RecordingFiles] = {}  # room id -> files
        self._finishing: list[RecordingFiles] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder-io")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="recorder-flush")

    def writing(self) -> list[str]:
        """Ids of the recordings whose files are still being written (live takes, and
        stopped ones whose last bytes are not yet flushed)."""
        return [f.recording_id for f in (*self.active.values(), *self._finishing)]

    async def close(self) -> None:
        """Close every open stem cleanly (server shutdown) and stop the flush task."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for files in list(self.active.values()):
            self._finish(files, CloseReason.SERVER_SHUTDOWN)
        await self._flush_once()
        self._io.shutdown(wait=True)

    # -- RoomListener ----------------------------------------------------------------

    async def on_recording_state(self, room: Room, previous: RecordingState) -> None:
        state = room.state
        files = self.active.get(room.id)
        if state is RecordingState.RECORDING and previous not in LIVE_STATES:
            # a new take: the first, or one after an interruption or a restart
            assert room.recording is not None
            files = RecordingFiles(recording_dir(self.root, room.recording.id), room)
            self.active[room.id] = files
            files.event(
                RecordingEvent.START,
                recording=room.recording.id,
                session=room.id,
                take=room.recording.take,
            )
            return
        if files is None:
            return
        if state is RecordingState.PAUSED:
            files.set_state(state)
            files.event(RecordingEvent.PAUSE)
        elif state is RecordingState.RECORDING:
            files.set_state(state)
            files.event(RecordingEvent.RESUME)
        elif state is RecordingState.STOPPED:
            self._finish(files, "stopped")
            await self._flush_once()

    async def let_go(self, room_id: str) -> None:
        """The room's take is no longer this process's to write (a cluster declared this
        node dead and marked the take interrupted): its stems are closed and flushed as
        they are, the log says `interrupted`."""
        files = self.active.get(room_id)
        if files is not None:
            self._finish(files, RecordingEvent.INTERRUPTED)
            await self._flush_once()

    def _finish(self, files: RecordingFiles, reason: str) -> None:
        files.set_state(RecordingState.STOPPED)
        for seat in list(files.segments):
            files.close_segment(seat, reason)
        files.event(RecordingEvent.STOP if reason == "stopped" else reason)
        files.closed = True
        self.active.pop(files.room.id, None)
        self._finishing.append(files)

    # -- packets (subscriber of the media plane) ----------------------------------------------

    def on_packet(self, room_id: str, seat: str, conn_id: str, packet: RtpAudioPacket) -> None:
        files = self.active.get(room_id)
        if files is not None:
            files.on_packet(seat, conn_id, packet)

    def on_seat_closed(self, room_id: str, seat: str, conn_id: str, reason: CloseReason) -> None:
        files = self.active.get(room_id)
        if files is not None:
            segment = files.segments.get(seat)
            if segment is not None and segment.conn_id == conn_id:
                files.close_segment(seat, reason)

    # -- flushing ------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._flush_once()

    async def _flush_once(self) -> None:
        targets = list(self.active.values()) + self._finishing
        if not targets:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, _flush_all, targets)
        self._finishing = [f for f in self._finishing if not f.done]
        for files in targets:
            if files.failure is not None and not files.failure_reported:
                files.failure_reported = True
                await self._stop_failed(files, files.failure)

    async def _stop_failed(self, files: RecordingFiles, failure: OSError) -> None:
        """On the loop, after a write failed: stop that room's recording with the reason.
        The stop reaches the finalizer like any other, so what was written is finalized."""
        reason = write_failure_reason(failure)
        try:
            stopped = await files.room.stop_for(reason, files.recording_id)
        except Exception:
            log.exception("room %s: could not stop after a failed write", files.room.id)
            stopped = False
        if not stopped and self.active.get(files.room.id) is files:
            # the room could not be stopped; still write nothing more for this recording
            self._finish(files, reason)


def _append_durably(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        _sync(f)


def _sync(file: TextIO) -> None:
    """Worker thread: write out and fsync (the profile counts time in here as a wait)."""
    file.flush()
    os.fsync(file.fileno())


def _flush_all(targets: list[RecordingFiles]) -> None:
    for files in targets:
        try:
            files.flush()
        except Exception:
            # never let a disk problem stop the room; the log says what was lost
            log.exception("could not write recording %s", files.recording_id)


def mark_interrupted_on_disk(recordings_root: Path, recording_id: str) -> None:
    """At start-up: note the interruption in the recording's own log, if it exists."""
    path = recording_dir(recordings_root, recording_id) / layout.RECORDING_LOG
    if path.exists():
        _append_durably(path, [json.dumps({"type": RecordingEvent.INTERRUPTED, "at": wall()})])
