"""Crash-safe writes of a browser capture's runs, in the format `capture.layout` defines.

Every function here blocks (writes and fsyncs): callers run them off the event loop.
The order makes a crash at any moment safe: a chunk's bytes are appended to the run's
media file and fsynced *before* its index line is appended and fsynced, so the index
never vouches for bytes that are not on disk. A torn media tail beyond what the index
vouches for is cut off before the next append; a torn index line is ended with a line
break so the next line is whole.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from storyroom.capture import layout
from storyroom.capture.layout import CaptureRun
from storyroom.recording.oggopus import fsync_directory


def create_run(
    recording_dir: Path,
    seat: str,
    *,
    mime: str,
    rec_start: float,
    server_start: float,
    key: str,
    at: float,
) -> CaptureRun:
    """A new, empty run: its index (with the `open` line) and its media file, both made
    with exclusive create under the next free run number."""
    folder = layout.capture_dir(recording_dir, seat)
    folder.mkdir(parents=True, exist_ok=True)
    number = layout.next_run_number(recording_dir, seat)
    media = layout.run_media(recording_dir, seat, number, mime)
    with open(media, "xb") as f:
        os.fsync(f.fileno())
    with open(layout.run_index(recording_dir, seat, number), "xb") as f:
        f.write(layout.open_line(mime, rec_start, server_start, key, at))
        f.flush()
        os.fsync(f.fileno())
    fsync_directory(folder)
    return CaptureRun(
        seat=seat,
        run=number,
        mime=mime,
        media=media,
        rec_start=rec_start,
        server_start=server_start,
        chunks=0,
        bytes=0,
        closed=False,
        key=key,
    )


def load_runs(recording_dir: Path, seat: str) -> list[CaptureRun]:
    """A seat's runs as their indexes say, ready to append to (see `load_run`)."""
    runs = layout.read_runs(recording_dir, seat)
    for run in runs:
        _end_torn_line(layout.run_index(recording_dir, seat, run.run))
    return runs


def load_run(recording_dir: Path, seat: str, number: int) -> CaptureRun | None:
    """A run as its index says, ready to append to: a torn last index line is ended
    (so it stays one unreadable line), or None when there is no such run."""
    run = layout.read_run(recording_dir, seat, number)
    if run is not None:
        _end_torn_line(layout.run_index(recording_dir, seat, number))
    return run


def _end_torn_line(index: Path) -> None:
    with open(index, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())


def append_chunk(
    recording_dir: Path, run: CaptureRun, data: bytes, sha256: str, at: float
) -> CaptureRun:
    """Chunk `run.chunks` appended: bytes first (a torn tail cut off), then its line."""
    with open(run.media, "rb+") as f:
        f.truncate(run.bytes)
        f.seek(run.bytes)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _append_index(
        recording_dir, run, layout.chunk_line(run.chunks, run.bytes, len(data), sha256, at)
    )
    return replace(
        run,
        chunks=run.chunks + 1,
        bytes=run.bytes + len(data),
        chunk_sha256=(*run.chunk_sha256, sha256),
    )


def read_head(run: CaptureRun, size: int) -> bytes:
    """The first bytes of the run's media that its index vouches for (at most `size`)."""
    with open(run.media, "rb") as f:
        return f.read(min(size, run.bytes))


def close_run(recording_dir: Path, run: CaptureRun, at: float) -> CaptureRun:
    """The run's `close` line: the browser says it has sent every chunk."""
    _append_index(recording_dir, run, layout.close_line(run.chunks, run.bytes, at))
    return replace(run, closed=True)


def _append_index(recording_dir: Path, run: CaptureRun, line: bytes) -> None:
    with open(layout.run_index(recording_dir, run.seat, run.run), "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
