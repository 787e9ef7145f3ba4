"""A recording on disk: the one module that names its folder, its files and the events
of its logs, and reads those logs back.

```
<recordings dir>/<recording id>/        (ids are server-generated)
├── recording.jsonl                      the recording clock: RecordingEvent lines
├── stems/
│   ├── <seat>-<NN>.opus                 Ogg Opus, one per seat and connection
│   ├── <seat>-<NN>.timing.jsonl         a line per packet, SegmentEvent objects
│   └── <seat>.flac                      finalized: the voice alone
├── master.wav, access.mp3, chapters.vtt, chapters.json, waveform.svg,
│   waveform.json, metadata.json, manifest-sha256.txt   finalized
├── transcript.json, .vtt, .txt          transcribed, after finalization
├── .finalize-progress.json              while a finalization job runs
├── .rebuilding/                         while raw files are rebuilt from shared storage
└── .waveform.json                       levels made later from the access copy, for
                                         recordings finalized before waveform.json
```
Finalized files are first written under their name plus :data:`PART_SUFFIX`.
`docs/recording-format.md` describes every file's contents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

STEMS: Final = "stems"
RECORDING_LOG: Final = "recording.jsonl"
REBUILDING: Final = ".rebuilding"
"""Hidden: a recording's raw files being put back together from shared storage, moved
into place (`stems/` last) once whole."""
PROGRESS_FILE: Final = ".finalize-progress.json"
"""Hidden (a dot name): bookkeeping, never listed among a recording's files."""
DERIVED_LEVELS: Final = ".waveform.json"
"""`waveform.json`'s levels for a recording finalized before it existed, made from the
access copy on first request. Hidden, so the finalized listing, its manifest and
`metadata.json` stay as they were archived."""
OPUS_SUFFIX: Final = ".opus"
TIMING_SUFFIX: Final = ".timing.jsonl"

MASTER: Final = "master.wav"
ACCESS_COPY: Final = "access.mp3"
CHAPTERS_VTT: Final = "chapters.vtt"
CHAPTERS_JSON: Final = "chapters.json"
WAVEFORM: Final = "waveform.svg"
WAVEFORM_LEVELS: Final = "waveform.json"
METADATA: Final = "metadata.json"
MANIFEST: Final = "manifest-sha256.txt"
TRANSCRIPT_JSON: Final = "transcript.json"
TRANSCRIPT_VTT: Final = "transcript.vtt"
TRANSCRIPT_TXT: Final = "transcript.txt"
TRANSCRIPT_FILES: Final = (TRANSCRIPT_JSON, TRANSCRIPT_VTT, TRANSCRIPT_TXT)
PART_SUFFIX: Final = ".part"
"""A finalized file being written; renamed when the whole set is complete."""

_SEGMENT_FILE: Final = re.compile(
    r"^(?P<seat>[A-Za-z0-9_]+)-(?P<index>\d+)(?P<suffix>\.opus|\.timing\.jsonl)$"
)


def recording_dir(recordings_root: Path, recording_id: str) -> Path:
    """The folder of one recording (`recording_id` is one the server generated)."""
    return recordings_root / recording_id


def segment_name(seat: str, index: int) -> str:
    """`<seat>-<NN>`: one seat's audio over one connection (numbered from 1)."""
    return f"{seat}-{index:02d}"


def segment_opus(seat: str, index: int) -> str:
    """A segment's Ogg Opus stem, relative to the recording's folder."""
    return f"{STEMS}/{segment_name(seat, index)}{OPUS_SUFFIX}"


def segment_timing(seat: str, index: int) -> str:
    """A segment's timing log, relative to the recording's folder."""
    return f"{STEMS}/{segment_name(seat, index)}{TIMING_SUFFIX}"


def finalized_stem(seat: str) -> str:
    """A seat's finalized FLAC stem, relative to the recording's folder."""
    return f"{STEMS}/{seat}.flac"


def is_finalized_stem(name: str) -> bool:
    """Whether `name` (relative to the recording's folder) is a finalized stem."""
    return name.startswith(f"{STEMS}/") and name.endswith(".flac")


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """What a file name in `stems/` says about the raw segment it belongs to."""

    seat: str
    index: int
    timing: bool
    """The timing log (else the Ogg Opus stem)."""


def parse_segment_file(name: str) -> SegmentFile | None:
    """The segment a raw file in `stems/` belongs to, or None for any other name."""
    match = _SEGMENT_FILE.match(name)
    if match is None:
        return None
    return SegmentFile(match["seat"], int(match["index"]), match["suffix"] == TIMING_SUFFIX)


class RecordingEvent(StrEnum):
    """The `type` of a line in `recording.jsonl`.

    A take that ends without a stop logs its reason in place of `stop`
    (`server_shutdown`, `disk_full`, `write_failed`)."""

    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    INTERRUPTED = "interrupted"
    SEGMENT_OPEN = "segment_open"
    SEGMENT_CLOSE = "segment_close"


class SegmentEvent(StrEnum):
    """The `type` of an object line in a segment's timing log (packets are lists)."""

    OPEN = "open"
    GAP = "gap"
    PAUSE = "pause"
    RESUME = "resume"
    DISCONTINUITY = "discontinuity"
    CLOSE = "close"


class JsonLines:
    """The values of a JSON-lines log, in order, read as the recorder wrote them.

    A line that does not parse (the last one, torn by a crash; or garbage) is skipped
    and counted in :attr:`damaged`; a missing file has no lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damaged = 0

    def __iter__(self) -> Iterator[Any]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    value = json.loads(line)
                except ValueError:
                    self.damaged += 1
                    continue
                yield value
