"""Whether this server can do its work now. `GET /readyz` and `storyroom check` ask the
same questions, each answered by a `Check` that names itself: the database takes a
write, the data folder takes a file and has room, the MP3 encoder is there (and, in a
running server, the finalizer's queue runs).

The checks that touch the disk block (fsync, SQLite): callers run them off the loop.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from storyroom.config import Settings
from storyroom.database import postgres_sql
from storyroom.finalize import mp3_encoder
from storyroom.storage.shipper import Shipper
from storyroom.store import ModuleMigrations

MIB: Final = 1024 * 1024
PROBE_FILE: Final = ".readiness-probe"
DATABASE_TIMEOUT_S: Final = 2.0

TABLES = ModuleMigrations(
    "readiness",
    (
        """
        -- one row, rewritten by every readiness check: the database takes writes
        CREATE TABLE readiness_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
        """,
    ),
)


@dataclass(frozen=True, slots=True)
class Check:
    """One question's answer: `name` says which, `detail` says what was found."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def database(target: Path | str) -> Check:
    """Blocking: a write to the readiness table, committed (a separate connection, so a
    failure leaves the server's own connection as it was). `target` is the SQLite file
    or PostgreSQL's URL."""
    write = "INSERT INTO readiness_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at"
    if isinstance(target, str):
        return _postgres(target, write)
    try:
        with contextlib.closing(sqlite3.connect(target, timeout=DATABASE_TIMEOUT_S)) as db, db:
            db.execute(write, (time.time(),))
    except sqlite3.Error as exc:
        return Check("database", False, f"{target} does not take writes: {exc}")
    return Check("database", True, f"{target} takes writes")


def _postgres(url: str, write: str) -> Check:
    import psycopg

    where = redacted(url)
    try:
        with psycopg.connect(url, connect_timeout=int(DATABASE_TIMEOUT_S)) as db:
            db.execute(postgres_sql(write), (time.time(),))
    except psycopg.Error as exc:
        return Check("database", False, f"{where} does not take writes: {exc}")
    return Check("database", True, f"{where} takes writes")


def redacted(url: str) -> str:
    """A database URL without its password, for logs and health pages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def data_folder(data_dir: Path) -> Check:
    """Blocking: a small file created, written, synced and removed in the data folder."""
    probe = data_dir / PROBE_FILE
    try:
        probe.unlink(missing_ok=True)  # left by a process that died between the two
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"storyroom\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return Check("data_folder", False, f"{data_dir} is not writable: {exc.strerror or exc}")
    return Check("data_folder", True, f"{data_dir} is writable")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on `path`'s file system."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def free_space(data_dir: Path, min_free_mb: int) -> Check:
    try:
        free = free_bytes(data_dir)
    except OSError as exc:
        return Check("free_space", False, f"{data_dir}: {exc.strerror or exc}")
    detail = f"{free / MIB:,.0f} MiB free in {data_dir}; at least {min_free_mb:,} MiB wanted"
    return Check("free_space", free >= min_free_mb * MIB, detail)


def mp3_encoder_present() -> Check:
    encoder = mp3_encoder.available()
    return Check("mp3_encoder", encoder is not None, mp3_encoder.describe(encoder))


def shipping(shipper: Shipper, settings: Settings) -> Check:
    """Shared storage keeps up: a crash now would lose at most `s3_max_lag_s` more than
    the local disk does."""
    lag, most = shipper.lag_s, settings.s3_max_lag_s
    if not shipper.running:
        return Check("shipping", False, "the shipper has stopped")
    detail = f"{lag:.1f} s behind the recorder ({len(shipper.recordings)} recording(s)); at most {most:.0f} s wanted"
    if shipper.consecutive_failures:
        detail += f"; {shipper.consecutive_failures} failed pass(es) in a row"
    return Check("shipping", lag <= most, detail)


def failing(checks: list[Check]) -> list[str]:
    return [check.name for check in checks if not check.ok]
