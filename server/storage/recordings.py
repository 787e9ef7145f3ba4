"""What the other wings ask of shared storage, in their own terms: rebuild a recording's
folder from its raw objects (`rebuild`), upload its finalized files (`upload_finalized`),
and a presigned URL for one of them (`download_url`).

`rebuild` is the step a "finalize from shared storage" job runs before finalizing, on
whatever node or worker has the job: it needs only the store and the recording id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from storyroom.capture import layout as capture_layout
from storyroom.finalize.contracts import FinalizedFile
from storyroom.recording import layout
from storyroom.storage.keys import RawRange, final_key, parse_raw_key, raw_key, raw_prefix
from storyroom.storage.objects import ObjectStore, StorageError

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS: Final = 4
FIRST_RETRY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class RebuiltFile:
    """One file put back together: its name in the recording's folder and its size."""

    name: str
    bytes: int
    holes: int
    """1 when objects exist past a range never shipped (the file stops there), else 0."""


def contiguous_ranges(parts: list[RawRange]) -> tuple[list[RawRange], int]:
    """The objects that give back the file from byte 0 without a hole, in order; and the
    number of holes found after that. Overlaps (a range shipped again after an upload
    whose answer was lost) hold the same bytes: each byte is taken once."""
    chosen: list[RawRange] = []
    offset = 0
    remaining = sorted(parts, key=lambda p: (p.first, -p.end))
    while remaining:
        covering = [p for p in remaining if p.first <= offset < p.end]
        if not covering:
            break
        best = max(covering, key=lambda p: p.end)
        chosen.append(best)
        offset = best.end
        remaining = [p for p in remaining if p.end > offset]
    return chosen, 1 if remaining else 0


class RecordingStorage:
    """A recording's objects in one store. Owner: the app (the same object is the
    shipper's store)."""

    def __init__(self, objects: ObjectStore, *, prefix: str = "", url_ttl_s: int = 300) -> None:
        self.objects = objects
        self.prefix = prefix
        self.url_ttl_s = url_ttl_s

    async def rebuild(self, recording_id: str, directory: Path) -> list[RebuiltFile]:
        """Put the recording's stems, timing logs, `recording.jsonl` and browser captures back into
        `directory` (which has no `stems/`) from the raw objects, one object in memory at
        a time. What was never shipped is missing at each file's end.

        The files are written under `.rebuilding/` and moved into place, `stems/` last:
        a folder with `stems/` is whole, and a rebuild cut short is started again. A
        `recording.jsonl` already here is kept (it holds at least what was shipped)."""
        parts: dict[str, list[RawRange]] = {}
        async for stored in self.objects.list(raw_prefix(self.prefix, recording_id)):
            part = parse_raw_key(self.prefix, recording_id, stored.key)
            if part is None or not _rebuildable(part.file):
                log.warning("recording %s: ignored the object %s", recording_id, stored.key)
                continue
            if stored.size != part.end - part.first:
                # a torn upload: its node died mid-request and the store (SeaweedFS does)
                # kept an object of what arrived; its bytes were never shipped, so the
                # file ends before it (or has a hole, reported below) as for any range
                # the node did not ship, instead of failing the whole take
                log.warning(
                    "recording %s: ignored the torn object %s (%d bytes)",
                    recording_id,
                    stored.key,
                    stored.size,
                )
                continue
            parts.setdefault(part.file, []).append(part)
        if not parts:
            raise StorageError(f"recording {recording_id} has no objects in shared storage")
        staging = directory / layout.REBUILDING
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        await asyncio.to_thread((staging / layout.STEMS).mkdir, parents=True)
        rebuilt = [
            await self._rebuild_file(recording_id, staging, name, found)
            for name, found in sorted(parts.items())
        ]
        await asyncio.to_thread(_move_into_place, staging, directory)
        log.info("recording %s rebuilt from shared storage: %d files", recording_id, len(rebuilt))
        return rebuilt

    async def _rebuild_file(
        self, recording_id: str, staging: Path, name: str, found: list[RawRange]
    ) -> RebuiltFile:
        chosen, holes = contiguous_ranges(found)
        size = 0
        await asyncio.to_thread((staging / name).parent.mkdir, parents=True, exist_ok=True)
        f = await asyncio.to_thread(open, staging / name, "xb")
        try:
            for part in chosen:
                key = raw_key(self.prefix, recording_id, part)
                data = await self.objects.get(key)
                if len(data) != part.end - part.first:
                    raise StorageError(f"{key} holds {len(data)} bytes, not what its name says")
                await asyncio.to_thread(f.write, data[size - part.first :])
                size = part.end
            await asyncio.to_thread(f.flush)
            await asyncio.to_thread(os.fsync, f.fileno())
        finally:
            f.close()
        if holes:
            log.error("recording %s: %s has a hole after byte %d", recording_id, name, size)
        return RebuiltFile(name, size, holes)

    async def upload_finalized(
        self, recording_id: str, directory: Path, files: tuple[FinalizedFile, ...]
    ) -> bool:
        """Upload every finalized file, each retried with backoff; False (and the
        reason in the log) when one could not be: downloads then come from the disk."""
        for entry in files:
            key = final_key(self.prefix, recording_id, entry.name)
            for attempt in range(UPLOAD_ATTEMPTS):
                try:
                    await self.objects.put_file(key, directory / entry.name)
                    break
                except StorageError as exc:
                    if attempt == UPLOAD_ATTEMPTS - 1:
                        log.error("recording %s: %s not uploaded: %s", recording_id, key, exc)
                        return False
                    await asyncio.sleep(FIRST_RETRY_S * 2**attempt)
        return True

    async def download_url(
        self, recording_id: str, entry: FinalizedFile, filename: str, content_type: str
    ) -> str | None:
        """A short-lived presigned URL of an uploaded finalized file, or None when the
        store does not hold it whole (it is then sent from the disk)."""
        key = final_key(self.prefix, recording_id, entry.name)
        if await self.objects.size(key) != entry.bytes:
            return None
        return await self.objects.presigned_get(
            key, self.url_ttl_s, filename=filename, content_type=content_type
        )


def _move_into_place(staging: Path, directory: Path) -> None:
    """Blocking: the rebuilt files into the recording's folder, `stems/` last."""
    log_file = staging / layout.RECORDING_LOG
    if log_file.exists() and not (directory / layout.RECORDING_LOG).exists():
        log_file.rename(directory / layout.RECORDING_LOG)
    captures = staging / capture_layout.CAPTURE
    if captures.exists() and not (directory / capture_layout.CAPTURE).exists():
        captures.rename(directory / capture_layout.CAPTURE)
    (staging / layout.STEMS).rename(directory / layout.STEMS)  # refused if it is there
    shutil.rmtree(staging)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the new names are durable
    finally:
        os.close(fd)


def _rebuildable(name: str) -> bool:
    if name == layout.RECORDING_LOG or capture_layout.is_capture_file(name):
        return True
    folder, _, file = name.partition("/")
    return folder == layout.STEMS and layout.parse_segment_file(file) is not None
