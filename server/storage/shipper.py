"""The shipper: every `interval` (<= 2 s) it uploads each new byte range of every file
of the recordings being written (stems, timing logs, `recording.jsonl`) as an immutable
object named by the recording, the file and the range (`keys.raw_key`).

It never touches the recorder: it reads the files the recorder fsyncs, off the loop,
in its own task. Memory is bounded (at most `CONCURRENT` uploads of at most
`MAX_OBJECT_BYTES` each); when the store fails it retries the same bytes with
exponential backoff, so an outage only makes the next objects bigger. A crash loses
what was written after the last shipped range: about `interval` plus the upload time,
which is what `lag_s` measures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final

from storyroom.capture import layout as capture_layout
from storyroom.recording import layout
from storyroom.recording.layout import recording_dir
from storyroom.storage.keys import RawRange, parse_raw_key, raw_key, raw_prefix
from storyroom.storage.objects import ObjectStore, StorageError
from storyroom.storage.recordings import contiguous_ranges
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_OBJECT_BYTES: Final = 4 * 1024 * 1024
CONCURRENT: Final = 8
MAX_BACKOFF_S: Final = 30.0
CLOSE_TIMEOUT_S: Final = 10.0


def shipped_files(directory: Path) -> dict[str, int]:
    """Blocking: the files of a recording being written that are shipped, with their
    sizes now (paths relative to the recording's folder); the browser captures are
    `capture_layout.shipped_files`."""
    sizes: dict[str, int] = {}
    log_path = directory / layout.RECORDING_LOG
    if log_path.is_file():
        sizes[layout.RECORDING_LOG] = log_path.stat().st_size
    stems = directory / layout.STEMS
    if stems.is_dir():
        for path in stems.iterdir():
            if layout.parse_segment_file(path.name) is not None:
                sizes[f"{layout.STEMS}/{path.name}"] = path.stat().st_size
    return sizes


def _files_to_ship(directory: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Blocking: the recording's files and its captures' media, then the captures'
    indexes (measured first: see `capture_layout.shipped_files`)."""
    media, indexes = capture_layout.shipped_files(directory)
    return {**shipped_files(directory), **media}, indexes


def _read(path: Path, first: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(first)
        return f.read(end - first)


class Shipper:
    """Ships the recordings `writing()` names (recording ids) while they are written,
    and once more after they leave it (their last bytes). Owner: the app."""

    def __init__(
        self,
        objects: ObjectStore,
        recordings_root: Path,
        writing: Callable[[], Collection[str]],
        *,
        prefix: str = "",
        interval: float = 2.0,
    ) -> None:
        self.objects = objects
        self.root = recordings_root
        self.writing = writing
        self.prefix = prefix
        self.interval = interval
        self.shipped: dict[tuple[str, str], int] = {}
        """(recording id, file) -> bytes [0, n) of it are in the store."""
        self.recordings: set[str] = set()
        self.caught_up_at = time.monotonic()
        """Every byte written before this moment (monotonic) is shipped."""
        self.bytes_shipped = 0
        self.objects_shipped = 0
        self.failures = 0
        self.consecutive_failures = 0
        self._limit = asyncio.Semaphore(CONCURRENT)
        self._task: asyncio.Task[None] | None = None

    @property
    def lag_s(self) -> float:
        """Seconds of recording that a crash now could lose beyond the local disk's."""
        return 0.0 if not self.recordings else time.monotonic() - self.caught_up_at

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="storage-shipper")

    async def resume(self, recording_id: str) -> None:
        """Ship what a recording interrupted by a crash of this process still has on
        disk beyond its objects (its last seconds, the `interrupted` line): each file
        goes on from the end of its objects, so nothing is sent twice."""
        parts: dict[str, list[RawRange]] = {}
        try:
            async for stored in self.objects.list(raw_prefix(self.prefix, recording_id)):
                part = parse_raw_key(self.prefix, recording_id, stored.key)
                if part is not None:
                    parts.setdefault(part.file, []).append(part)
        except StorageError as exc:
            # shipped again from the start: overlapping objects hold the same bytes
            log.warning("recording %s: its objects could not be listed: %s", recording_id, exc)
        for name, found in parts.items():
            chosen, _ = contiguous_ranges(found)
            if chosen:
                self.shipped[(recording_id, name)] = chosen[-1].end
        self.recordings.add(recording_id)

    async def close(self) -> None:
        """Stop, after one last pass (bounded in time) for what the recorder closed."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ship_once()
        except Exception:
            # the bytes stay on the local disk; a finalization from storage would miss
            # only what this pass did not ship, which the log says
            log.exception("shutting down: the last bytes of %s were not shipped", self.recordings)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                shipped = await self.ship_once()
            except Exception:
                # a folder that cannot be read, say: counted as a failed pass, retried
                log.exception("a shipping pass failed")
                shipped = False
            if shipped:
                self.consecutive_failures = 0
                pause = self.interval - (time.monotonic() - started)
            else:
                self.consecutive_failures += 1
                pause = min(MAX_BACKOFF_S, self.interval * 2**self.consecutive_failures)
            await asyncio.sleep(max(0.0, pause))

    async def ship_once(self) -> bool:
        """One pass over every recording being written; True when all of it is shipped
        (up to the sizes at the pass's start)."""
        started = time.monotonic()
        live = set(self.writing())
        self.recordings |= live
        ok = True
        for recording_id in sorted(self.recordings):
            directory = recording_dir(self.root, recording_id)
            sizes, indexes = await asyncio.to_thread(_files_to_ship, directory)
            results = await asyncio.gather(
                *(
                    self._ship_file(recording_id, directory, name, size)
                    for name, size in sizes.items()
                )
            )
            if all(results):
                # the capture indexes after their media: never ahead of what they vouch for
                results += await asyncio.gather(
                    *(
                        self._ship_file(recording_id, directory, name, size)
                        for name, size in indexes.items()
                    )
                )
                sizes = {**sizes, **indexes}
            if all(results):
                if recording_id not in live:
                    # finished before this pass began: its last bytes are now shipped
                    self.recordings.discard(recording_id)
                    for name in sizes:
                        self.shipped.pop((recording_id, name), None)
            else:
                ok = False
        if ok:
            self.caught_up_at = started
        return ok

    async def _ship_file(self, recording_id: str, directory: Path, name: str, size: int) -> bool:
        offset = self.shipped.get((recording_id, name), 0)
        if size < offset:
            # the recorder cut the file back to what was durable after a failed write,
            # and writes nothing more to it: the objects past `size` hold a torn tail,
            # which readers skip as they skip a crash's
            log.warning(
                "%s/%s was cut back to %d bytes after %d were shipped",
                recording_id,
                name,
                size,
                offset,
            )
            self.shipped[(recording_id, name)] = size
            return True
        try:
            while offset < size:
                end = min(size, offset + MAX_OBJECT_BYTES)
                async with self._limit:
                    data = await asyncio.to_thread(_read, directory / name, offset, end)
                    end = offset + len(data)
                    if end == offset:
                        break  # cut back after a failed write: nothing more to send
                    key = raw_key(self.prefix, recording_id, RawRange(name, offset, end))
                    if not await self.objects.put_new(key, data):
                        log.warning("%s was already stored; kept as it was", key)
                self.bytes_shipped += end - offset
                self.objects_shipped += 1
                offset = end
                self.shipped[(recording_id, name)] = offset
        except Exception as exc:
            # retried from `offset` at the next pass (with backoff): nothing is lost
            self.failures += 1
            log.warning("shipping %s/%s failed at byte %d: %s", recording_id, name, offset, exc)
            return False
        return True
