"""Transcription jobs: after a recording is finalized (never before `ready`, never
holding it up), its voices are transcribed one at a time in a low-priority worker
process, merged into turns and written beside the recording.

:class:`TranscribeJobs` owns the queue, the worker pool (made for a job and ended after
it: the model's memory is not kept between recordings), the status in the store
(`queued -> transcribing -> ready | failed | unavailable`, or `withdrawn`), and what
follows from consent and corrections. A job cut off by a stop is queued again at the
next start (:meth:`TranscriptStore.to_resume`)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.pool
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from storyroom.errors import NotFound, PreconditionFailed
from storyroom.finalize import outputs
from storyroom.finalize.contracts import FileKind, FinalizedFile
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.recording import layout
from storyroom.recording.layout import recording_dir
from storyroom.status import FinalizeStatus
from storyroom.store import RecordingRow, Store
from storyroom.tasks import cancel_and_wait
from storyroom.transcribe import documents, model
from storyroom.transcribe.contracts import (
    Correction,
    ModelMissing,
    TranscribeError,
    Transcript,
    TranscriptStatus,
    VoiceInput,
    VoiceTranscript,
)
from storyroom.transcribe.store import TranscriptState, TranscriptStore
from storyroom.transcribe.turns import merge

log = logging.getLogger(__name__)

T = TypeVar("T")
WATCH_INTERVAL_S = 2.0
"""How often a running voice checks that its worker process is still alive."""


class TranscribeJobs:
    """The transcription queue. Owner: the app. `on_update` hears every status change."""

    def __init__(
        self,
        store: Store,
        transcripts: TranscriptStore,
        recordings_root: Path,
        cache_root: Path,
        on_update: Callable[[str, TranscriptState], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.transcripts = transcripts
        self.root = recordings_root
        self.cache_root = cache_root
        self.on_update = on_update
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.queued: set[str] = set()
        self.current: str | None = None
        self._pool: multiprocessing.pool.Pool | None = None
        self.worker_pid = 0
        """The worker process while one is running (else 0)."""
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        """Held while a recording's transcript files are rewritten (a job's end, a
        correction, a withdrawal), so two writers never interleave."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="transcribe-jobs")
        for recording_id in await self.transcripts.to_resume():
            await self.enqueue(recording_id)

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await asyncio.to_thread(self._end_pool)

    def _end_pool(self) -> None:
        pool, self._pool = self._pool, None
        self.worker_pid = 0
        if pool is not None:
            pool.terminate()
            pool.join()

    async def finalize_updated(self, rec: RecordingRow) -> None:
        """A finalize status change: a recording that became ready is transcribed next."""
        if rec.finalize_status is FinalizeStatus.READY:
            await self.enqueue(rec.id)

    async def enqueue(self, recording_id: str) -> None:
        if recording_id in self.queued or recording_id == self.current:
            return
        state = await self.transcripts.state(recording_id)
        if state is not None and state.status is TranscriptStatus.WITHDRAWN:
            return
        self.queued.add(recording_id)
        await self._set(recording_id, TranscriptStatus.QUEUED)
        self.queue.put_nowait(recording_id)

    async def _set(
        self,
        recording_id: str,
        status: TranscriptStatus,
        done: int = 0,
        total: int = 0,
        reason: str | None = None,
    ) -> None:
        await self.transcripts.set_state(recording_id, status, done, total, reason)
        if self.on_update is not None:
            state = await self.transcripts.state(recording_id)
            if state is not None:
                await self.on_update(recording_id, state)

    async def _run(self) -> None:
        while True:
            recording_id = await self.queue.get()
            self.queued.discard(recording_id)
            self.current = recording_id
            try:
                await self.run(recording_id)
            except Exception:
                # e.g. the recording was deleted while it ran: its state cannot be written
                log.exception("transcription job for %s ended badly", recording_id)
            finally:
                self.current = None
                if self.queue.empty():
                    await asyncio.to_thread(self._end_pool)

    async def run(self, recording_id: str) -> TranscriptState | None:
        """Transcribe one recording now; its state after."""
        try:
            await self._transcribe(recording_id)
        except asyncio.CancelledError:
            raise
        except ModelMissing as exc:
            log.warning("no transcript for %s: %s", recording_id, exc)
            await self._set(recording_id, TranscriptStatus.UNAVAILABLE, reason=str(exc))
        except Exception as exc:
            log.exception("transcribing %s failed", recording_id)
            await self._set(
                recording_id, TranscriptStatus.FAILED, reason=f"{type(exc).__name__}: {exc}"
            )
        return await self.transcripts.state(recording_id)

    async def _transcribe(self, recording_id: str) -> None:
        rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if rec is None:
            return
        state = await self.transcripts.state(recording_id)
        if state is not None and state.status is TranscriptStatus.WITHDRAWN:
            return
        if rec.finalize_status is not FinalizeStatus.READY or rec.finalized is None:
            raise TranscribeError("the recording is not finalized")
        reason = model.missing()
        if reason is not None:
            raise ModelMissing(reason)
        session = await self.store.get_session(rec.session_id, EVERY_ORGANISATION)
        language = session.language if session is not None else "en"
        names = {s.seat: s.name for s in await self.store.seats(rec.session_id)}
        directory = recording_dir(self.root, rec.id)
        stems = [f for f in rec.finalized.files if f.kind is FileKind.STEM]
        voices = [VoiceInput(Path(f.name).stem, str(directory / f.name), language) for f in stems]
        await self._set(rec.id, TranscriptStatus.TRANSCRIBING, 0, len(voices))
        results: list[VoiceTranscript] = []
        problems: list[str] = []
        for done, voice in enumerate(voices, start=1):
            try:
                results.append(await self._in_worker(voice))
            except ModelMissing:
                raise
            except TranscribeError as exc:
                problems.append(f"{voice.seat}: {exc}")
            await self._set(rec.id, TranscriptStatus.TRANSCRIBING, done, len(voices))
        if not results:
            raise TranscribeError("; ".join(problems) or "the recording has no voices")
        transcript = Transcript(
            recording_id=rec.id,
            language=language,
            model=model.info(),
            turns=merge(results, names),
            created_at=time.time(),
            speakers={r.seat: names.get(r.seat, r.seat) for r in results},
        )
        async with self._lock:
            state = await self.transcripts.state(rec.id)
            if state is not None and state.status is TranscriptStatus.WITHDRAWN:
                return  # withdrawn while it ran: nothing is written
            await self._publish(rec, transcript)
        await self._set(
            rec.id,
            TranscriptStatus.READY,
            len(voices),
            len(voices),
            "; ".join(problems) or None,
        )
        log.info(
            "recording %s transcribed: %d turns, %.1f CPU s",
            rec.id,
            len(transcript.turns),
            sum(r.cpu_s for r in results),
        )

    async def _in_worker(self, voice: VoiceInput) -> VoiceTranscript:
        from storyroom.transcribe.engine import prepare_worker, transcribe_voice

        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(1, initializer=prepare_worker)
            self.worker_pid = await _apply(self._pool, os.getpid)
        work = asyncio.ensure_future(
            _apply(self._pool, transcribe_voice, voice, str(self.cache_root))
        )
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=WATCH_INTERVAL_S)
                if done:
                    return work.result()
                if not _alive(self.worker_pid):
                    # a pool replaces a dead worker but never answers for its task
                    await asyncio.to_thread(self._end_pool)
                    raise TranscribeError("the transcription worker ended unexpectedly")
        finally:
            work.cancel()

    async def _publish(self, rec: RecordingRow, transcript: Transcript) -> None:
        """Corrections kept from before applied, the files written, listed in the
        recording's files and manifest, and the text indexed."""
        corrections = await self.transcripts.corrections(rec.id)
        transcript = _corrected(transcript, corrections)
        directory = recording_dir(self.root, rec.id)
        fresh = await self.store.get_recording(rec.id, EVERY_ORGANISATION)
        if fresh is None or fresh.finalized is None:
            return
        names = await asyncio.to_thread(documents.write, directory, transcript)
        finalized = await asyncio.to_thread(outputs.relist, directory, fresh.finalized, names)
        await self.store.set_finalize(rec.id, FinalizeStatus.READY, 100.0, None, finalized)
        await self.transcripts.index(transcript)

    # -- what staff and consent do to a transcript -----------------------------------------

    async def transcript(self, rec: RecordingRow) -> Transcript | None:
        directory = recording_dir(self.root, rec.id)
        return await asyncio.to_thread(documents.read, directory)

    async def captions(self, rec: RecordingRow) -> FinalizedFile:
        """The listing of `rec`'s `transcript.vtt`, for a player's captions;
        `NotFound` (`transcript_withdrawn`, `no_transcript`) when there is none to show."""
        state = await self.transcripts.state(rec.id)
        if state is not None and state.status is TranscriptStatus.WITHDRAWN:
            raise NotFound(
                "the transcript was removed when consent to archive was withdrawn",
                code="transcript_withdrawn",
            )
        entry = captions_entry(rec)
        if entry is None:
            raise NotFound("this recording has no transcript", code="no_transcript")
        return entry

    async def correct(
        self, rec: RecordingRow, turn_index: int, text: str, actor: str
    ) -> Transcript:
        """Staff's `text` for a turn, kept with who and when, written into the files."""
        async with self._lock:
            transcript = await self.transcript(rec)
            if transcript is None:
                raise PreconditionFailed("this recording has no transcript", code="no_transcript")
            turn = next((t for t in transcript.turns if t.index == turn_index), None)
            if turn is None:
                raise NotFound("no such turn")
            await self.transcripts.add_correction(
                rec.id, turn, Correction(text, actor, time.time())
            )
            await self._publish(rec, transcript)
        updated = await self.transcript(rec)
        assert updated is not None
        return updated

    async def withdraw(self, recording_ids: Iterable[str]) -> None:
        """Consent withdrawn: the transcripts' files, text and corrections are removed and
        none is made again."""
        async with self._lock:
            ids = list(recording_ids)
            for recording_id in ids:
                rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
                if rec is None:
                    continue
                directory = recording_dir(self.root, rec.id)
                await asyncio.to_thread(documents.remove, directory)
                if rec.finalized is not None and any(
                    rec.finalized.file(name) for name in layout.TRANSCRIPT_FILES
                ):
                    finalized = await asyncio.to_thread(
                        outputs.relist, directory, rec.finalized, (), layout.TRANSCRIPT_FILES
                    )
                    await self.store.set_finalize(
                        rec.id, FinalizeStatus.READY, 100.0, None, finalized
                    )
            await self.transcripts.forget(ids, TranscriptStatus.WITHDRAWN)
        for recording_id in ids:
            state = await self.transcripts.state(recording_id)
            if state is not None and self.on_update is not None:
                await self.on_update(recording_id, state)


def captions_entry(rec: RecordingRow) -> FinalizedFile | None:
    """The listing of a ready recording's captions (`transcript.vtt`), if it has them."""
    if rec.finalize_status is not FinalizeStatus.READY or rec.finalized is None:
        return None
    return rec.finalized.file(layout.TRANSCRIPT_VTT)


def _corrected(transcript: Transcript, corrections: dict[int, Correction]) -> Transcript:
    turns = tuple(
        replace(t, correction=corrections.get(t.index, t.correction)) for t in transcript.turns
    )
    return replace(transcript, turns=turns)


async def _apply(pool: multiprocessing.pool.Pool, func: Callable[..., T], *args: Any) -> T:
    """`func(*args)` in `pool`, awaited without blocking the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def done(value: T) -> None:
        loop.call_soon_threadsafe(_settle, future, value, None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, future, None, exc)

    pool.apply_async(func, args, callback=done, error_callback=failed)
    return await future


def _alive(pid: int) -> bool:
    """Whether `pid` is a live child of this process (reaping any that ended)."""
    return any(child.pid == pid for child in multiprocessing.active_children())


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
