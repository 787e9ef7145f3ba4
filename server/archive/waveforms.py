"""The waveform levels the players draw (`waveform.json`), for every ready recording.

Recordings finalized since the levels existed list `waveform.json` among their files.
Older ones get the same document made from their access copy the first time a player
asks (decoded in a worker thread, frame by frame: `finalize.waveform.levels_from_audio`)
and kept beside it as the hidden `.waveform.json` (`recording.layout.DERIVED_LEVELS`),
so the listing, the manifest and `metadata.json` stay exactly as they were archived and
the next request reads the file. One decode per recording at a time, and at most
`CONCURRENT` recordings at once: the public listening page can ask for it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from storyroom.archive.copies import access_entry
from storyroom.errors import NotFound
from storyroom.finalize.waveform import levels_from_audio
from storyroom.ids import new_id
from storyroom.recording.layout import (
    DERIVED_LEVELS,
    PART_SUFFIX,
    WAVEFORM_LEVELS,
    recording_dir,
)
from storyroom.status import FinalizeStatus
from storyroom.store import RecordingRow

log = logging.getLogger(__name__)

CONCURRENT = 1


@dataclass(frozen=True, slots=True)
class LevelsFile:
    """Where a recording's levels are, with the sha256 that is their ETag."""

    path: Path
    sha256: str


def _write_levels(access: Path, duration_s: float, target: Path) -> str:
    """Decode, write under a new hidden name (exclusive create), then rename into place;
    returns the sha256 of what was written. Blocking."""
    document = levels_from_audio(access, duration_s).encode("utf-8")
    part = target.with_name(f"{target.name}.{new_id('tmp')}{PART_SUFFIX}")
    with open(part, "xb") as f:
        f.write(document)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, target)
    return hashlib.sha256(document).hexdigest()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class WaveformLevels:
    """Finds or makes a ready recording's levels. Owner: app.py (`Services.waveforms`)."""

    def __init__(self, recordings_dir: Path) -> None:
        self.recordings_dir = recordings_dir
        self._slots = asyncio.Semaphore(CONCURRENT)
        self._making: dict[str, asyncio.Lock] = {}

    async def levels(self, rec: RecordingRow) -> LevelsFile:
        """The levels of a ready recording; `NotFound` when it has no access copy."""
        folder = recording_dir(self.recordings_dir, rec.id)
        listed = rec.finalized.file(WAVEFORM_LEVELS) if rec.finalized is not None else None
        if listed is not None and rec.finalize_status is FinalizeStatus.READY:
            return LevelsFile(folder / listed.name, listed.sha256)
        access = access_entry(rec)
        if access is None or rec.finalized is None:
            raise NotFound("no waveform")
        target = folder / DERIVED_LEVELS
        lock = self._making.setdefault(rec.id, asyncio.Lock())
        try:
            async with lock:  # a second request waits for the first one's file
                if await asyncio.to_thread(target.is_file):
                    return LevelsFile(target, await asyncio.to_thread(_sha256, target))
                async with self._slots:
                    log.info("making the waveform levels of %s from its access copy", rec.id)
                    digest = await asyncio.to_thread(
                        _write_levels, folder / access.name, rec.finalized.duration_s, target
                    )
                return LevelsFile(target, digest)
        finally:
            if not lock.locked():
                self._making.pop(rec.id, None)
