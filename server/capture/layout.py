"""A browser capture on disk: the one module that names its files and reads its index.

```
<recording dir>/capture/<seat>/
├── <NN>.<ext>        one capture run: what one MediaRecorder produced, from its start
│                     to its stop (a page reload starts run NN+1), its chunks appended in
│                     sequence order; ext from the recorder's MIME type (webm, ogg, mp4)
└── <NN>.jsonl        the run's index, one JSON object per line:
                        {"type": "open", "mime": ..., "rec_start": s, "server_start": t,
                         "key": k, "at": t}
                        {"type": "chunk", "seq": k, "offset": bytes, "size": n,
                         "sha256": hex, "at": t}           (seq 0, 1, 2 ... in order)
                        {"type": "close", "chunks": n, "bytes": b, "at": t}
```
`rec_start` is the browser's estimate of the recording-clock second of the run's first
sample (the room timer's elapsed time, from the clock offset it measures over Socket.IO);
`server_start` is the same instant in server clock seconds (the steady clock the
snapshots' `server_time` carries). Both are hints: the merge aligns the audio itself.
`key` is the browser's own name for the run (so a retried open finds the run it made);
`at` is when the server wrote the line (wall clock). A run without `close` is incomplete (the page went away);
its chunks are still usable. Names are server-generated: seats and run numbers only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from storyroom.recording.layout import JsonLines
from storyroom.seats import SEATS

CAPTURE: Final = "capture"

MIME_SUFFIXES: Final = {"audio/webm": ".webm", "audio/ogg": ".ogg", "audio/mp4": ".mp4"}
"""The containers a capture may use (the part of the MIME type before any `;`)."""

INDEX_SUFFIX: Final = ".jsonl"
CAPTURE_SUFFIXES: Final = frozenset((*MIME_SUFFIXES.values(), INDEX_SUFFIX))

_RUN_INDEX: Final = re.compile(r"^(?P<run>\d+)\.jsonl$")


def capture_dir(recording_dir: Path, seat: str) -> Path:
    """One seat's captures in a recording's folder."""
    return recording_dir / CAPTURE / seat


def container_suffix(mime: str) -> str | None:
    """The file suffix for a recorder MIME type (`audio/webm;codecs=opus`), or None."""
    return MIME_SUFFIXES.get(mime.split(";", 1)[0].strip().lower())


def run_media(recording_dir: Path, seat: str, run: int, mime: str) -> Path:
    suffix = container_suffix(mime)
    if suffix is None:
        raise ValueError(f"unsupported capture type {mime!r}")
    return capture_dir(recording_dir, seat) / f"{run:02d}{suffix}"


def run_index(recording_dir: Path, seat: str, run: int) -> Path:
    return capture_dir(recording_dir, seat) / f"{run:02d}{INDEX_SUFFIX}"


@dataclass(frozen=True, slots=True)
class CaptureRun:
    """What a run's index says: where its audio is and how far it got."""

    seat: str
    run: int
    mime: str
    media: Path
    rec_start: float
    server_start: float
    chunks: int
    """Chunks stored (0..chunks-1, contiguous)."""
    bytes: int
    """Bytes of `media` that the index vouches for (a torn tail beyond them is ignored)."""
    closed: bool
    key: str = ""
    """The browser's name for the run (its retried open finds this run)."""
    chunk_sha256: tuple[str, ...] = ()
    """The stored chunks' sha256 (hex), by seq."""


def read_run(recording_dir: Path, seat: str, run: int) -> CaptureRun | None:
    """A run as its index records it, or None when there is no usable `open` line."""
    opened: dict[str, Any] | None = None
    chunks = 0
    size = 0
    closed = False
    digests: list[str] = []
    for line in JsonLines(run_index(recording_dir, seat, run)):
        if not isinstance(line, dict):
            continue
        kind = line.get("type")
        if kind == "open" and opened is None:
            opened = line
        elif kind == "chunk" and opened is not None and line.get("seq") == chunks:
            if line.get("offset") != size:
                break
            chunks += 1
            size += int(line.get("size", 0))
            digests.append(str(line.get("sha256", "")))
        elif kind == "close" and opened is not None:
            closed = True
    if opened is None or container_suffix(str(opened.get("mime", ""))) is None:
        return None
    mime = str(opened["mime"])
    return CaptureRun(
        seat=seat,
        run=run,
        mime=mime,
        media=run_media(recording_dir, seat, run, mime),
        rec_start=float(opened.get("rec_start", 0.0)),
        server_start=float(opened.get("server_start", 0.0)),
        chunks=chunks,
        bytes=size,
        closed=closed,
        key=str(opened.get("key", "")),
        chunk_sha256=tuple(digests),
    )


def read_runs(recording_dir: Path, seat: str) -> list[CaptureRun]:
    """A seat's capture runs in order (empty when its browser uploaded nothing)."""
    folder = capture_dir(recording_dir, seat)
    if not folder.is_dir():
        return []
    numbers = sorted(
        int(match["run"]) for p in folder.iterdir() if (match := _RUN_INDEX.match(p.name))
    )
    return [run for n in numbers if (run := read_run(recording_dir, seat, n)) is not None]


def shipped_files(recording_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Blocking: what of the captures shared storage should hold now, as two maps of
    file (relative to the recording's folder) to size: the runs' media, each only as far
    as its index vouches (a torn tail is never shipped, so no byte shipped is ever
    rewritten), then their indexes, measured before the media so that an index shipped
    after its media never vouches for bytes not shipped."""
    media: dict[str, int] = {}
    indexes: dict[str, int] = {}
    for seat in captured_seats(recording_dir):
        folder = capture_dir(recording_dir, seat)
        for path in folder.iterdir():
            if _RUN_INDEX.match(path.name):
                indexes[f"{CAPTURE}/{seat}/{path.name}"] = path.stat().st_size
        for run in read_runs(recording_dir, seat):
            media[f"{CAPTURE}/{seat}/{run.media.name}"] = run.bytes
    return media, indexes


def is_capture_file(name: str) -> bool:
    """Whether `name` (relative to a recording's folder) names a capture run's media
    or index: capture/<seat>/<NN>.<ext>."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != CAPTURE or parts[1] not in SEATS:
        return False
    number, dot, suffix = parts[2].partition(".")
    return number.isdigit() and bool(dot) and f".{suffix}" in CAPTURE_SUFFIXES


def captured_seats(recording_dir: Path) -> list[str]:
    """The seats that uploaded any capture for a recording."""
    folder = recording_dir / CAPTURE
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


# -- writing (owner: capture.store, which appends these lines crash-safely) -----------


def open_line(mime: str, rec_start: float, server_start: float, key: str, at: float) -> bytes:
    return _line(
        {
            "type": "open",
            "mime": mime,
            "rec_start": rec_start,
            "server_start": server_start,
            "key": key,
            "at": at,
        }
    )


def chunk_line(seq: int, offset: int, size: int, sha256: str, at: float) -> bytes:
    return _line(
        {"type": "chunk", "seq": seq, "offset": offset, "size": size, "sha256": sha256, "at": at}
    )


def close_line(chunks: int, size: int, at: float) -> bytes:
    return _line({"type": "close", "chunks": chunks, "bytes": size, "at": at})


def _line(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, separators=(",", ":")) + "\n").encode()


def next_run_number(recording_dir: Path, seat: str) -> int:
    """The number for a seat's next run: one more than any index on disk (1 for the first)."""
    folder = capture_dir(recording_dir, seat)
    if not folder.is_dir():
        return 1
    numbers = [int(m["run"]) for p in folder.iterdir() if (m := _RUN_INDEX.match(p.name))]
    return max(numbers, default=0) + 1
