"""Finalization jobs: the queue and its worker process, one job at a time, off the
event loop.

The job itself (:func:`storyroom.finalize.run.finalize_recording`) decodes, mixes and
encodes in blocks in a separate process, given a
:class:`~storyroom.finalize.contracts.FinalizeInput` built here from the database;
:class:`FinalizeJobs` owns the queue, the process, progress reporting (percent to the
room and to staff) and the recording's finalize status
`queued -> finalizing -> ready | failed`. The server queues every stopped take; the
CLI's `storyroom recording finalize` runs one job the same way. A job interrupted by
a server stop is queued again at the next start; outputs are written under
temporary names and renamed, so a rerun is safe.

Browser captures (:mod:`storyroom.capture`): before a job starts its worker, it waits
(at most `capture_wait_s`, shown as the `waiting_for_capture` stage) while any seat's
capture run is still open and still receiving chunks. A capture that completes after
its recording was finalized (:meth:`FinalizeJobs.capture_arrived`) queues the
recording again: the worker replaces the outputs and records the earlier version.

With the job queue in PostgreSQL (:mod:`storyroom.finalize.queue`, a cluster) the same
class keeps the same interface (`enqueue`, `capture_arrived`, `run`): the job is a row
written in the transaction that stops the take, `storyroom worker` processes (and this
one, when it runs a worker) take jobs and call :meth:`FinalizeJobs.run`, and what they
write to the recording's row reaches this process's `on_update` through
:class:`~storyroom.finalize.queue.FinalizeWatch`, which reads the rows being finalized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from storyroom import __version__
from storyroom.capture import layout as capture_layout
from storyroom.errors import NotFound
from storyroom.finalize.contracts import ConsentFlags, Cue, Finalized, FinalizeInput, Marker
from storyroom.finalize.progress import read_progress
from storyroom.finalize.queue import FinalizeQueue, FinalizeWatch
from storyroom.histogram import Histogram
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.recording import layout
from storyroom.recording.layout import PROGRESS_FILE, recording_dir
from storyroom.room.rooms import Room
from storyroom.status import FinalizeStage, FinalizeStatus, RecordingState
from storyroom.storage.recordings import RecordingStorage
from storyroom.store import RecordingRow, Store
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
CAPTURE_IDLE_S = 15.0
"""An open capture run whose index has not grown for this long is no longer waited for
(its page went away; what it uploaded is used)."""
# Seconds a job took (/metrics): a 40-minute conversation takes ~1.5 min on one core.
SHUTDOWN_GRACE_S = 2.0
"""How long a server's own queue worker lets its running job go on when the server stops."""
DURATION_BUCKETS_S = (5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0)


async def finalize_input(store: Store, rec: RecordingRow) -> FinalizeInput:
    """Everything the worker needs from the database (it has none)."""
    session = await store.get_session(rec.session_id, EVERY_ORGANISATION)
    if session is None:
        raise RuntimeError(f"recording {rec.id} has no session")
    seats = {s.seat: s.name for s in await store.seats(rec.session_id)}
    consent = {
        seat: ConsentFlags(c.record, c.archive, c.public)
        for seat, c in (await store.current_consent(rec.session_id)).items()
    }
    texts = {q["id"]: q["text"] for q in session.questions}

    def question_text(question_id: str) -> str:
        text = texts.get(question_id, {})
        return str(text.get(session.language) or next(iter(text.values()), question_id))

    cues = tuple(
        Cue(c.id, c.question_id, question_text(c.question_id), c.rec_time)
        for c in await store.cues(rec.session_id)
        if c.recording_id == rec.id and c.rec_time is not None
    )
    markers = [
        Marker(m.id, m.label, m.rec_time)
        for m in await store.markers(rec.session_id)
        if m.recording_id == rec.id and m.rec_time is not None
    ]
    for event in await store.recording_events(rec.id):
        if event["kind"] in ("pause", "resume"):
            markers.append(Marker(0, event["kind"], event["rec_time"]))
    markers.sort(key=lambda m: m.rec_time)
    status = RecordingState(rec.status)
    return FinalizeInput(
        recording_id=rec.id,
        session_id=rec.session_id,
        title=session.title,
        language=session.language,
        take=rec.take,
        started_at=rec.started_at,
        status=status,
        seats=seats,
        consent=consent,
        cues=cues,
        markers=tuple(markers),
        duration_s=rec.elapsed_before if status is RecordingState.STOPPED else None,
        software=f"storyroom {__version__}",
        kind=session.kind,
    )


@dataclass(frozen=True, slots=True)
class JobFailed:
    """Why a job produced nothing: the error as staff and operators see it."""

    reason: str


def _worker(directory: str, job: FinalizeInput, progress_path: str, results: Connection) -> None:
    """Entry point of the worker process: the result or the error goes back through a
    pipe, not a file beside the recording, so "the disk is full" still reaches us."""
    # imported here: the audio libraries load in the worker, never in the server
    from storyroom.finalize.run import finalize_recording

    _end_with_parent()

    outcome: Finalized | JobFailed
    try:
        outcome = finalize_recording(Path(directory), job, Path(progress_path))
    except Exception as exc:
        outcome = JobFailed(f"{type(exc).__name__}: {exc}")
    results.send(outcome)
    results.close()


def _end_with_parent() -> None:
    """In the worker process: end when the process that started it is gone (a SIGKILLed
    `storyroom worker` must not leave a finalizer writing beside the retried job's)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_INTERVAL)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class FinalizeJobs:
    """The finalization queue and its worker process. Owner: the app (or, for one job,
    the CLI).

    `on_update` hears every change of a recording's finalize status or percent.
    `queue`: jobs are rows in PostgreSQL (the store's `job_writer` must be its
    `write_job`); `work`: this process runs a worker of that queue too."""

    def __init__(
        self,
        store: Store,
        recordings_root: Path,
        on_update: Callable[[RecordingRow], Awaitable[None]] | None = None,
        shared: RecordingStorage | None = None,
        capture_wait_s: float = 0.0,
        queue: FinalizeQueue | None = None,
        work: bool = True,
    ) -> None:
        self.store = store
        self.jobs_queue = queue
        self.work = work
        self.watch = FinalizeWatch(store, on_update) if queue is not None else None
        self.root = recordings_root
        self.on_update = on_update
        self.shared = shared
        """Shared storage, when configured: a recording whose folder is not here is
        rebuilt from it, and finalized files are uploaded to it."""
        self.capture_wait_s = capture_wait_s
        self.again: set[str] = set()
        """Recordings whose capture arrived while they were being finalized."""
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.queued: set[str] = set()
        self.current: str | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._context = multiprocessing.get_context("spawn")
        self.durations = Histogram(DURATION_BUCKETS_S)
        """Seconds each job that ran its worker took, ready or failed."""
        self.outcomes: Counter[FinalizeStatus] = Counter()
        """Jobs run by this process, by how they ended (`ready` or `failed`)."""

    @property
    def running(self) -> bool:
        """Whether the queue's task is alive (it takes the next job when one comes; with
        the PostgreSQL queue, it reads progress and, if this process works, takes jobs)."""
        alive = self._task is not None and not self._task.done()
        if self.watch is not None:
            return self.watch.running and (alive or not self.work)
        return alive

    @property
    def pending(self) -> int:
        """Jobs queued, and the one being run (with the PostgreSQL queue: the cluster's
        recordings queued or being finalized, as last read)."""
        if self.watch is not None:
            return self.watch.pending
        return self.queue.qsize() + (self.current is not None)

    async def start(self) -> None:
        if self.jobs_queue is not None:
            assert self.watch is not None
            self.watch.start()
            if self.work:
                # a server stopping does not wait for a whole job: another worker, or
                # this one after its restart, runs it again
                self._task = asyncio.create_task(
                    self.serve_queue(grace_s=SHUTDOWN_GRACE_S), name="finalize-worker"
                )
            return
        self._task = asyncio.create_task(self._run(), name="finalize-jobs")
        for rec in await self.store.recordings_to_finalize():
            await self.enqueue(rec.id)

    async def serve_queue(self, signals: bool = False, grace_s: float | None = None) -> None:
        """Take jobs of the PostgreSQL queue until cancelled (or, with `signals`, until
        SIGTERM or SIGINT): `storyroom worker`, or a task of the server. A running job
        is given `grace_s` to end (None: all it takes), then queued again."""
        assert self.jobs_queue is not None
        try:
            await self.jobs_queue.work(self.store, self.run, signals=signals, grace_s=grace_s)
        finally:
            self._kill()

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self.watch is not None:
            await self.watch.close()
        self._kill()

    def _kill(self) -> None:
        proc, self._process = self._process, None
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    async def on_recording_state(self, room: Room, previous: RecordingState) -> None:
        """RoomListener: a stopped recording is finalized (listed after the recorder)."""
        if room.state is RecordingState.STOPPED and room.recording is not None:
            if self.watch is not None:
                # its job was written with the stop (Store.job_writer)
                await self._announce(room.recording.id)
            else:
                await self.enqueue(room.recording.id)

    async def enqueue(self, recording_id: str) -> None:
        """Finalize `recording_id` (stopped or interrupted) soon; nothing if it is queued
        or being finalized already. Raises NotFound for an unknown recording."""
        if self.watch is not None:
            await self.store.queue_finalize(recording_id)
            await self._announce(recording_id)
            return
        if recording_id in self.queued or recording_id == self.current:
            return
        if await self.store.get_recording(recording_id, EVERY_ORGANISATION) is None:
            raise NotFound(f"there is no recording {recording_id!r}", code="unknown_recording")
        self.queued.add(recording_id)
        await self.store.set_finalize(recording_id, FinalizeStatus.QUEUED, 0.0)
        await self._announce(recording_id)
        self.queue.put_nowait(recording_id)

    async def _announce(self, recording_id: str) -> None:
        rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if rec is not None and self.watch is not None:
            await self.watch.announce(rec)
        elif rec is not None and self.on_update is not None:
            await self.on_update(rec)

    async def _run(self) -> None:
        while True:
            recording_id = await self.queue.get()
            self.queued.discard(recording_id)
            await self.run(recording_id)
            if recording_id in self.again:
                self.again.discard(recording_id)
                await self.enqueue(recording_id)

    async def capture_arrived(self, recording_id: str) -> None:
        """A browser capture of `recording_id` is complete. If the recording was
        already finalized (or failed), it is finalized again with the capture, its files,
        manifest and metadata replaced; if it is being finalized now, once more after;
        if it is queued or still recording, there is nothing to do."""
        if self.jobs_queue is not None:
            await self._capture_arrived_queued(recording_id)
            return
        if recording_id == self.current:
            self.again.add(recording_id)
            return
        rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if rec is not None and rec.finalize_status in (FinalizeStatus.READY, FinalizeStatus.FAILED):
            await self.enqueue(recording_id)

    async def _capture_arrived_queued(self, recording_id: str) -> None:
        """`capture_arrived` with the PostgreSQL queue: the job may run on any worker."""
        assert self.jobs_queue is not None
        rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if rec is None:
            return
        if rec.finalize_status in (FinalizeStatus.READY, FinalizeStatus.FAILED):
            await self.store.queue_finalize(recording_id)
        elif rec.finalize_status is FinalizeStatus.FINALIZING:
            # after the running job (same lock)
            await self.store.queue_finalize(recording_id, self.jobs_queue.write_job_again)
        else:
            return
        await self._announce(recording_id)

    async def _wait_for_captures(self, recording_id: str, directory: Path) -> None:
        """Wait, at most `capture_wait_s`, while a capture run is open and growing."""
        deadline = time.monotonic() + self.capture_wait_s
        announced = False
        while time.monotonic() < deadline and await asyncio.to_thread(
            _capture_uploading, directory
        ):
            if not announced:
                await self.store.set_finalize(
                    recording_id,
                    FinalizeStatus.FINALIZING,
                    0.0,
                    stage=FinalizeStage.WAITING_FOR_CAPTURE,
                )
                await self._announce(recording_id)
                announced = True
            await asyncio.sleep(POLL_INTERVAL)

    async def run(self, recording_id: str) -> RecordingRow | None:
        """Finalize one recording now, in a worker process, and return its row after
        (`ready` or `failed`, with the reason); None if there is no such recording."""
        self.current = recording_id
        try:
            await self._finalize(recording_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("finalizing %s failed", recording_id)
            await self.store.set_finalize(
                recording_id, FinalizeStatus.FAILED, 0.0, f"{type(exc).__name__}: {exc}"
            )
            await self._announce(recording_id)
        finally:
            self.current = None
        done = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if done is not None and done.finalize_status is not None:
            self.outcomes[done.finalize_status] += 1
        return done

    async def _finalize(self, recording_id: str) -> None:
        rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if rec is None:
            return
        directory = recording_dir(self.root, rec.id)
        if self.shared is not None and not (directory / layout.STEMS).is_dir():
            # recorded on another node, or this folder was lost: the shipped objects
            await self.store.set_finalize(
                rec.id, FinalizeStatus.FINALIZING, 0.0, stage=FinalizeStage.REBUILDING
            )
            await self._announce(rec.id)
            await self.shared.rebuild(rec.id, directory)
        if not (directory / layout.STEMS).is_dir():
            await self.store.set_finalize(
                rec.id, FinalizeStatus.FAILED, 0.0, "no audio was recorded"
            )
            await self._announce(rec.id)
            return
        if self.capture_wait_s > 0:
            await self._wait_for_captures(rec.id, directory)
        job = await finalize_input(self.store, rec)
        progress_path = directory / PROGRESS_FILE
        progress_path.unlink(missing_ok=True)
        await self.store.set_finalize(rec.id, FinalizeStatus.FINALIZING, 0.0)
        await self._announce(rec.id)
        started = time.monotonic()
        results, sender = self._context.Pipe(duplex=False)
        proc = self._context.Process(
            target=_worker,
            args=(str(directory), job, str(progress_path), sender),
            name=f"finalize-{rec.id}",
            daemon=True,
        )
        self._process = proc
        proc.start()
        sender.close()
        percent = 0.0
        stage: str | None = None
        outcome: Finalized | JobFailed | None = None
        while proc.is_alive():
            await asyncio.sleep(POLL_INTERVAL)
            if outcome is None and results.poll():
                outcome = _receive(results)
            written = read_progress(progress_path)
            if written is not None and (written[0] >= percent + 1 or written[1] != stage):
                percent, stage = written
                await self.store.set_finalize(
                    rec.id, FinalizeStatus.FINALIZING, percent, stage=stage
                )
                await self._announce(rec.id)
        proc.join()
        self._process = None
        if outcome is None and results.poll():
            outcome = _receive(results)
        results.close()
        with contextlib.suppress(OSError):
            progress_path.unlink(missing_ok=True)
        if outcome is None:
            outcome = JobFailed(f"the finalizer process ended with code {proc.exitcode}")
        took = time.monotonic() - started
        self.durations.observe(took)
        if isinstance(outcome, Finalized) and self.shared is not None:
            # before `ready`: whoever sees it ready can download it from the store (a
            # file the store does not hold is sent from this disk)
            await self.shared.upload_finalized(rec.id, directory, outcome.files)
        if isinstance(outcome, Finalized):
            await self.store.set_finalize(rec.id, FinalizeStatus.READY, 100.0, None, outcome)
            log.info("recording %s ready in %.1f s", rec.id, took)
        else:
            await self.store.set_finalize(
                rec.id, FinalizeStatus.FAILED, percent, outcome.reason, stage=stage
            )
            log.error("recording %s failed: %s", rec.id, outcome.reason)
        await self._announce(rec.id)


def _capture_uploading(directory: Path) -> bool:
    """Whether any seat's capture run is open and its index grew lately. Blocking."""
    now = time.time()
    for seat in capture_layout.captured_seats(directory):
        for run in capture_layout.read_runs(directory, seat):
            index = capture_layout.run_index(directory, seat, run.run)
            with contextlib.suppress(OSError):
                if not run.closed and now - index.stat().st_mtime < CAPTURE_IDLE_S:
                    return True
    return False


def _receive(results: Connection) -> Finalized | JobFailed | None:
    try:
        outcome: Finalized | JobFailed = results.recv()
    except (EOFError, OSError):
        return None
    return outcome
