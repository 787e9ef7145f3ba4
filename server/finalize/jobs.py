"""Runs finalization jobs: one worker process at a time, off the event loop.

The job itself (`finalize.finalize_recording`) decodes, mixes and encodes in blocks in
a separate process; this module owns the queue, the process, progress reporting
(percent to the room and to staff) and the recording's finalize status
`queued -> finalizing -> ready | failed`. A job interrupted by a server stop is
queued again at the next start; outputs are written under temporary names and
renamed, so a rerun is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from storyroom import __version__
from storyroom.recording.recorder import recording_dir
from storyroom.room.rooms import Room
from storyroom.status import RecordingState
from storyroom.store import RecordingRow, Store
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
PROGRESS_FILE = ".finalize-progress.json"


async def build_spec(store: Store, rec: RecordingRow) -> dict[str, Any]:
    """Everything the worker needs, as plain data (it has no database)."""
    session = await store.get_session(rec.session_id)
    if session is None:
        raise RuntimeError(f"recording {rec.id} has no session")
    seats = {s.seat: s.name for s in await store.seats(rec.session_id)}
    consent = {
        seat: {"record": c.record, "archive": c.archive, "public": c.public}
        for seat, c in (await store.current_consent(rec.session_id)).items()
    }
    texts = {q["id"]: q["text"] for q in session.questions}

    def question_text(question_id: str) -> str:
        text = texts.get(question_id, {})
        return str(text.get(session.language) or next(iter(text.values()), question_id))

    cues = [
        {
            "seq": c.id,
            "question_id": c.question_id,
            "text": question_text(c.question_id),
            "rec_time": c.rec_time,
        }
        for c in await store.cues(rec.session_id)
        if c.recording_id == rec.id and c.rec_time is not None
    ]
    markers: list[dict[str, Any]] = [
        {"seq": m.id, "label": m.label, "rec_time": m.rec_time}
        for m in await store.markers(rec.session_id)
        if m.recording_id == rec.id and m.rec_time is not None
    ]
    for event in await store.recording_events(rec.id):
        if event["kind"] in ("pause", "resume"):
            markers.append({"seq": 0, "label": event["kind"], "rec_time": event["rec_time"]})
    markers.sort(key=lambda m: m["rec_time"])
    return {
        "recording_id": rec.id,
        "session_id": rec.session_id,
        "title": session.title,
        "language": session.language,
        "take": rec.take,
        "started_at": rec.started_at,
        "status": rec.status,
        "seats": seats,
        "consent": consent,
        "cues": cues,
        "markers": markers,
        "duration_s": rec.elapsed_before if rec.status == "stopped" else None,
        "software": f"storyroom {__version__}",
    }


def run_job(directory: str, spec: dict[str, Any], progress_path: str) -> dict[str, Any]:
    """The job, in whatever process calls it (the worker, or the CLI directly)."""
    from storyroom.finalize.run import FinalizeInput, finalize_recording

    return finalize_recording(Path(directory), FinalizeInput(**spec), Path(progress_path))


def _worker(directory: str, spec: dict[str, Any], progress_path: str, results: Connection) -> None:
    """Entry point of the worker process: the result or the error goes back through a
    pipe, not a file beside the recording, so "the disk is full" still reaches us."""
    try:
        result: dict[str, Any] = {"ok": True, "result": run_job(directory, spec, progress_path)}
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    results.send(result)
    results.close()


class Finalizer:
    """Owner of the finalization queue and its worker process. Owner: the app."""

    def __init__(
        self,
        store: Store,
        recordings_root: Path,
        on_update: Callable[[RecordingRow], Awaitable[None]],
    ) -> None:
        self.store = store
        self.root = recordings_root
        self.on_update = on_update
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.queued: set[str] = set()
        self.current: str | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._context = multiprocessing.get_context("spawn")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="finalizer")
        for rec in await self.store.recordings_to_finalize():
            await self.enqueue(rec.id)

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
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
            await self.enqueue(room.recording.id)

    async def enqueue(self, recording_id: str) -> None:
        if recording_id in self.queued or recording_id == self.current:
            return
        self.queued.add(recording_id)
        await self.store.set_finalize(recording_id, "queued", 0.0)
        await self._announce(recording_id)
        self.queue.put_nowait(recording_id)

    async def _announce(self, recording_id: str) -> None:
        rec = await self.store.get_recording(recording_id)
        if rec is not None:
            await self.on_update(rec)

    async def _run(self) -> None:
        while True:
            recording_id = await self.queue.get()
            self.queued.discard(recording_id)
            self.current = recording_id
            try:
                await self._finalize(recording_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("finalizing %s failed", recording_id)
                await self.store.set_finalize(
                    recording_id, "failed", 0.0, f"{type(exc).__name__}: {exc}"
                )
                await self._announce(recording_id)
            finally:
                self.current = None

    async def _finalize(self, recording_id: str) -> None:
        rec = await self.store.get_recording(recording_id)
        if rec is None:
            return
        directory = recording_dir(self.root, rec.id)
        if not (directory / "stems").is_dir():
            await self.store.set_finalize(rec.id, "failed", 0.0, "no audio was recorded")
            await self._announce(rec.id)
            return
        spec = await build_spec(self.store, rec)
        progress_path = directory / PROGRESS_FILE
        progress_path.unlink(missing_ok=True)
        await self.store.set_finalize(rec.id, "finalizing", 0.0)
        await self._announce(rec.id)
        started = time.monotonic()
        results, sender = self._context.Pipe(duplex=False)
        proc = self._context.Process(
            target=_worker,
            args=(str(directory), spec, str(progress_path), sender),
            name=f"finalize-{rec.id}",
            daemon=True,
        )
        self._process = proc
        proc.start()
        sender.close()
        percent = 0.0
        outcome: dict[str, Any] | None = None
        while proc.is_alive():
            await asyncio.sleep(POLL_INTERVAL)
            if outcome is None and results.poll():
                outcome = _receive(results)
            now_percent = _read_percent(progress_path)
            if now_percent is not None and now_percent >= percent + 1:
                percent = now_percent
                await self.store.set_finalize(rec.id, "finalizing", percent)
                await self._announce(rec.id)
        proc.join()
        self._process = None
        if outcome is None and results.poll():
            outcome = _receive(results)
        results.close()
        with contextlib.suppress(OSError):
            progress_path.unlink(missing_ok=True)
        if outcome is None:
            outcome = {
                "ok": False,
                "error": f"the finalizer process ended with code {proc.exitcode}",
            }
        if outcome.get("ok"):
            await self.store.set_finalize(rec.id, "ready", 100.0, None, outcome["result"])
            log.info("recording %s ready in %.1f s", rec.id, time.monotonic() - started)
        else:
            await self.store.set_finalize(rec.id, "failed", percent, str(outcome.get("error")))
            log.error("recording %s failed: %s", rec.id, outcome.get("error"))
        await self._announce(rec.id)


def _receive(results: Connection) -> dict[str, Any] | None:
    try:
        outcome: dict[str, Any] = results.recv()
    except (EOFError, OSError):
        return None
    return outcome


def _read_percent(path: Path) -> float | None:
    try:
        return float(json.loads(path.read_text("utf-8"))["percent"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
