"""The capture service: browsers' own recordings of their microphones, uploaded in
chunks while the take runs and after it stops, stored beside the stems.

A seat may upload only to a take of its own session, while the take is recording or
paused and for `window_s` after it stopped. Runs and chunks are numbered by the server
and the browser's order (seq 0, 1, 2 ... with no gaps); a chunk already stored with the
same bytes is accepted again (a retry whose answer was lost), with other bytes it is a
conflict. One lock per seat and take keeps its writes in order; the writes themselves
run off the event loop (`capture.store`). Owner: app.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from storyroom.capture import store
from storyroom.capture.layout import CaptureRun
from storyroom.capture.protocol import (
    HEAD_BYTES,
    RUN_MAX_BYTES,
    RUNS_MAX,
    ChunkIn,
    RunOpenIn,
    check_head,
    parse_chunk,
)
from storyroom.errors import InvalidInput, InvalidState, NotFound, PayloadTooLarge
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.recording.layout import recording_dir
from storyroom.room.rooms import Room
from storyroom.seats import SEATS, SeatName
from storyroom.status import LIVE_STATES
from storyroom.store import RecordingRow, SeatRow, Store

log = logging.getLogger(__name__)

UPLOAD_WINDOW_S: Final = 30 * 60.0
"""How long after a take stopped its seats may still upload their captures."""

RunClosed = Callable[[str], Awaitable[None]]
ProgressListener = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ChunkStored:
    run: CaptureRun
    created: bool
    """False for a chunk that was already stored with these bytes."""


@dataclass(slots=True)
class SeatProgress:
    """What has arrived of one seat's capture of one take, across its runs."""

    runs: dict[int, CaptureRun] = field(default_factory=dict)
    recorded: dict[int, int] = field(default_factory=dict)
    """Per run: the chunks the browser said it has recorded (from its uploads)."""

    def to_json(self) -> dict[str, Any]:
        stored = sum(run.chunks for run in self.runs.values())
        recorded = sum(
            max(run.chunks, self.recorded.get(number, 0)) for number, run in self.runs.items()
        )
        return {
            "runs": len(self.runs),
            "chunks": stored,
            "recorded": recorded,
            "bytes": sum(run.bytes for run in self.runs.values()),
            "closed": bool(self.runs) and all(run.closed for run in self.runs.values()),
            "percent": 100 if recorded == 0 else min(100, int(100 * stored / recorded)),
        }


class Captures:
    """Browser captures of every take, and what has arrived of them."""

    def __init__(
        self, store_: Store, recordings_dir: Path, *, window_s: float = UPLOAD_WINDOW_S
    ) -> None:
        self._store = store_
        self._recordings_dir = recordings_dir
        self.window_s = window_s
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._progress: dict[tuple[str, str], SeatProgress] = {}
        self._run_closed: list[RunClosed] = []
        self._progress_listeners: list[ProgressListener] = []
        self._written: dict[str, float] = {}
        """Recording id -> when (monotonic) a capture of it last changed."""

    def receiving(self) -> list[str]:
        """The takes whose captures changed within the upload window (and a minute):
        what shared storage's shipper keeps shipping after the recorder is done."""
        horizon = time.monotonic() - self.window_s - 60.0
        for recording_id in [r for r, at in self._written.items() if at < horizon]:
            del self._written[recording_id]
        return list(self._written)

    def on_run_closed(self, callback: RunClosed) -> None:
        """Call `callback(recording_id)` after a run of that take is closed (its browser
        sent every chunk): a finalized take may be finalized again with it."""
        self._run_closed.append(callback)

    def on_progress(self, listener: ProgressListener) -> None:
        """Call `listener(session_id, progress)` after every change of a take's captures
        (`progress` as `progress_json`)."""
        self._progress_listeners.append(listener)

    # -- the take and the seat ----------------------------------------------------------

    async def _take(self, seat: SeatRow, recording_id: str) -> RecordingRow:
        """The take `recording_id` of the seat's session, if it takes uploads now."""
        rec = await self._store.get_recording(recording_id, EVERY_ORGANISATION)  # seat-checked
        if rec is None or rec.session_id != seat.session_id:
            raise NotFound("no such recording")
        if rec.status in LIVE_STATES:
            return rec
        ended = rec.stopped_at if rec.stopped_at is not None else rec.started_at
        if time.time() - ended > self.window_s:
            raise InvalidState(
                "this recording ended too long ago to take uploads", code="upload_window_closed"
            )
        return rec

    def _lock(self, recording_id: str, seat: str) -> asyncio.Lock:
        return self._locks.setdefault((recording_id, seat), asyncio.Lock())

    async def _seat_progress(self, recording_id: str, seat: str) -> SeatProgress:
        """Under the seat's lock: its runs, read from disk the first time."""
        progress = self._progress.get((recording_id, seat))
        if progress is None:
            folder = recording_dir(self._recordings_dir, recording_id)
            runs = await asyncio.to_thread(store.load_runs, folder, seat)
            progress = SeatProgress(runs={run.run: run for run in runs})
            self._progress[(recording_id, seat)] = progress
        return progress

    async def _run(
        self, progress: SeatProgress, recording_id: str, seat: str, number: int
    ) -> CaptureRun:
        run = progress.runs.get(number)
        if run is None:
            folder = recording_dir(self._recordings_dir, recording_id)
            run = await asyncio.to_thread(store.load_run, folder, seat, number)
            if run is None:
                raise NotFound(f"no capture run {number} for this seat", code="unknown_run")
            progress.runs[number] = run
        return run

    # -- runs and chunks ----------------------------------------------------------------

    async def open_run(
        self, seat: SeatRow, recording_id: str, opened: RunOpenIn
    ) -> tuple[CaptureRun, bool]:
        """A new run for the seat's capture of the take (or the one this `key` opened
        before); True when it was made now."""
        rec = await self._take(seat, recording_id)
        async with self._lock(rec.id, seat.seat):
            progress = await self._seat_progress(rec.id, seat.seat)
            for run in progress.runs.values():
                if run.key == opened.key:
                    if run.mime != opened.mime:
                        raise InvalidState(
                            "that run key was used for another type", code="key_conflict"
                        )
                    return run, False
            if len(progress.runs) >= RUNS_MAX:
                raise InvalidState("this recording has too many capture runs", code="too_many_runs")
            folder = recording_dir(self._recordings_dir, rec.id)
            run = await asyncio.to_thread(
                store.create_run,
                folder,
                seat.seat,
                mime=opened.mime,
                rec_start=opened.rec_start,
                server_start=opened.server_start,
                key=opened.key,
                at=time.time(),
            )
            progress.runs[run.run] = run
            log.info("capture %s/%s: run %d opened (%s)", rec.id, seat.seat, run.run, run.mime)
        await self._announce(rec)
        return run, True

    async def run_state(self, seat: SeatRow, recording_id: str, number: int) -> CaptureRun:
        """A run of the seat's as the server has it (readable after the upload window)."""
        rec = await self._store.get_recording(recording_id, EVERY_ORGANISATION)  # seat-checked
        if rec is None or rec.session_id != seat.session_id:
            raise NotFound("no such recording")
        async with self._lock(rec.id, seat.seat):
            progress = await self._seat_progress(rec.id, seat.seat)
            return await self._run(progress, rec.id, seat.seat, number)

    async def put_chunk(
        self,
        seat: SeatRow,
        recording_id: str,
        number: int,
        seq: int,
        body: bytes,
        sha256: str | None,
        recorded: str | None,
        content_type: str,
    ) -> ChunkStored:
        """Store chunk `seq` of run `number`, in order, crash-safely."""
        rec = await self._take(seat, recording_id)
        async with self._lock(rec.id, seat.seat):
            progress = await self._seat_progress(rec.id, seat.seat)
            run = await self._run(progress, rec.id, seat.seat, number)
            if content_type not in ("application/octet-stream", run.mime.split(";")[0]):
                raise InvalidInput(
                    "send the chunk as application/octet-stream or the run's type",
                    code="unsupported_media_type",
                    status=415,
                )
            chunk = parse_chunk(seq, body, sha256, recorded)
            if seq == run.chunks and run.bytes < HEAD_BYTES:
                head = await asyncio.to_thread(store.read_head, run, HEAD_BYTES)
                check_head(run.mime, (head + chunk.data)[:HEAD_BYTES])
            actual = await asyncio.to_thread(_sha256, chunk.data)
            if actual != chunk.sha256:
                raise InvalidInput(
                    "the chunk's bytes do not match its sha256", code="digest_mismatch"
                )
            progress.recorded[number] = max(progress.recorded.get(number, 0), chunk.recorded)
            stored = await self._store_chunk(rec.id, run, chunk)
            progress.runs[number] = stored.run
        await self._announce(rec)
        return stored

    async def _store_chunk(self, recording_id: str, run: CaptureRun, chunk: ChunkIn) -> ChunkStored:
        if chunk.seq < run.chunks:
            if run.chunk_sha256[chunk.seq] == chunk.sha256:
                return ChunkStored(run, created=False)
            raise InvalidState(
                f"chunk {chunk.seq} is already stored with other bytes", code="seq_conflict"
            )
        if run.closed:
            raise InvalidState("this capture run is closed", code="run_closed")
        if chunk.seq > run.chunks:
            raise InvalidState(
                f"chunk {chunk.seq} came before chunk {run.chunks}", code="out_of_order"
            )
        if run.bytes + len(chunk.data) > RUN_MAX_BYTES:
            raise PayloadTooLarge("this capture run is too large", code="run_too_large")
        folder = recording_dir(self._recordings_dir, recording_id)
        updated = await asyncio.to_thread(
            store.append_chunk, folder, run, chunk.data, chunk.sha256, time.time()
        )
        return ChunkStored(updated, created=True)

    async def close_run(
        self, seat: SeatRow, recording_id: str, number: int, chunks: int
    ) -> CaptureRun:
        """The browser has sent every one of the run's `chunks`: its `close` line."""
        rec = await self._take(seat, recording_id)
        async with self._lock(rec.id, seat.seat):
            progress = await self._seat_progress(rec.id, seat.seat)
            run = await self._run(progress, rec.id, seat.seat, number)
            if run.closed:
                if run.chunks != chunks:
                    raise InvalidState("this capture run is closed", code="run_closed")
                return run
            if chunks != run.chunks:
                raise InvalidState(
                    f"the run has {run.chunks} chunks here, not {chunks}", code="chunks_missing"
                )
            folder = recording_dir(self._recordings_dir, rec.id)
            run = await asyncio.to_thread(store.close_run, folder, run, time.time())
            progress.runs[number] = run
            log.info(
                "capture %s/%s: run %d closed (%d chunks, %d bytes)",
                rec.id,
                seat.seat,
                number,
                run.chunks,
                run.bytes,
            )
        await self._announce(rec)
        for callback in self._run_closed:
            try:
                await callback(rec.id)
            except Exception:
                # the run is closed on disk whatever a follower does with it
                log.exception("capture %s: a follower of closed runs failed", rec.id)
        return run

    # -- progress -----------------------------------------------------------------------

    async def room_changed(self, room: Room) -> None:
        """Rooms.on_change: a facilitator who (re)joins hears how far the latest take's
        captures got, without waiting for the next chunk."""
        notice = room.notice or {}
        joined = notice.get("type") in ("seat_joined", "seat_replaced")
        if not joined or notice.get("seat") != SeatName.FACILITATOR.value:
            return
        rec = room.recording
        if rec is None:
            return
        for seat in SEATS:
            async with self._lock(rec.id, seat):
                await self._seat_progress(rec.id, seat)
        if any(self._progress[(rec.id, seat)].runs for seat in SEATS):
            await self._announce(rec)

    def progress_json(self, recording_id: str) -> dict[str, Any]:
        """`{"recording_id", "seats": {seat: {runs, chunks, recorded, bytes, closed,
        percent}}}` for the seats that uploaded anything of this take."""
        return {
            "recording_id": recording_id,
            "seats": {
                seat: progress.to_json()
                for (rec_id, seat), progress in sorted(self._progress.items())
                if rec_id == recording_id and progress.runs
            },
        }

    async def _announce(self, rec: RecordingRow) -> None:
        self._written[rec.id] = time.monotonic()
        payload = self.progress_json(rec.id)
        for listener in self._progress_listeners:
            try:
                await listener(rec.session_id, payload)
            except Exception:
                # progress is advisory and sent again with the next chunk
                log.warning("capture %s: progress not delivered", rec.id, exc_info=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
