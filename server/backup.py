"""`storyroom backup DEST`: a copy of everything the server keeps in its data folder,
safe to take while it runs and records.

The database is copied with SQLite's online backup API in one step: one read
transaction, so the copy is the database as it was at one moment, and in WAL mode the
server goes on writing meanwhile. The recordings are copied after it, so every
recording the copy's database knows has its files (a take that was recording is then
found `interrupted` by a server started on the copy, and finalized from the stems as
far as they were copied). Then the generated staff token and the outbox. DEST is laid
out as a data folder: restoring is pointing `STORYROOM_DATA_DIR` at it (or moving it
in place). Finalization's unfinished `.part` files and its progress file are left out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from storyroom.config import Settings
from storyroom.errors import InvalidInput
from storyroom.readiness import PROBE_FILE
from storyroom.recording import layout
from storyroom.staff.tokens import TOKEN_FILE

BUSY_TIMEOUT_S: Final = 30.0
LEFT_OUT: Final = (layout.PART_SUFFIX, layout.PROGRESS_FILE, PROBE_FILE)


@dataclass(frozen=True, slots=True)
class Part:
    """One thing the backup wrote: `name` under DEST, how many files, how many bytes."""

    name: str
    what: str
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Backup:
    dest: Path
    parts: tuple[Part, ...]
    seconds: float

    @property
    def bytes(self) -> int:
        return sum(part.bytes for part in self.parts)

    @property
    def files(self) -> int:
        return sum(part.files for part in self.parts)


def backup(settings: Settings, dest: Path) -> Backup:
    """Blocking: copy `settings.data_dir` to `dest`, a folder that must not exist yet or be
    empty. `InvalidInput` when it cannot be used or there is no database to copy."""
    if settings.database_url:
        raise InvalidInput(
            "the database is PostgreSQL: back it up with pg_dump (docs/deploy.md);"
            " this command copies the embedded SQLite database and the data folder"
        )
    if not settings.database_path.is_file():
        raise InvalidInput(f"there is no database at {settings.database_path}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"{dest} exists and is not an empty folder")
    if dest.resolve().is_relative_to(settings.data_dir.resolve()):
        raise InvalidInput(f"{dest} is inside the data folder {settings.data_dir}")
    started = time.monotonic()
    dest.mkdir(parents=True, exist_ok=True)
    parts = [_database(settings.database_path, dest / settings.database_path.name)]
    for source, what in (
        (settings.recordings_dir, "recordings: stems, timing logs, finalized files"),
        (settings.data_dir / TOKEN_FILE, "the generated staff token"),
        (settings.outbox_dir, "the outbox: messages not sent by SMTP"),
    ):
        if source.exists():
            parts.append(_copy(source, dest / source.name, what))
    _sync(dest)
    return Backup(dest, tuple(parts), time.monotonic() - started)


def _database(source: Path, target: Path) -> Part:
    """SQLite's online backup of `source` into `target`, then checked."""
    with (
        contextlib.closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT_S)) as live,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        live.backup(copy)  # all pages in one step: one consistent moment
        (verdict,) = copy.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise InvalidInput(f"the copied database does not check out: {verdict}")
        count = copy.execute("SELECT count(*) FROM recordings").fetchone()[0]
    _fsync(target)
    return Part(
        target.name, f"database (SQLite online backup, {count} recordings)", 1, _size(target)
    )


def _copy(source: Path, target: Path, what: str) -> Part:
    """A file, or a folder's files (each synced), as they are at the moment each is read."""
    if source.is_file():
        shutil.copy2(source, target)
        _fsync(target)
        return Part(target.name, what, 1, _size(target))
    files = size = 0
    for folder, _, names in os.walk(source):
        into = target / Path(folder).relative_to(source)
        into.mkdir(parents=True, exist_ok=True)
        for name in sorted(names):
            if name.endswith(LEFT_OUT):
                continue
            copied = into / name
            try:
                shutil.copy2(Path(folder) / name, copied)
            except FileNotFoundError:
                continue  # removed since it was listed (a finalized stem replaced)
            _fsync(copied)
            files += 1
            size += _size(copied)
    return Part(target.name + "/", what, files, size)


def _size(path: Path) -> int:
    return path.stat().st_size


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(folder: Path) -> None:
    """Every folder's entries durable too."""
    for parent, _, _ in os.walk(folder):
        _fsync(Path(parent))
