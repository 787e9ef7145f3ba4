"""The capture upload boundary: every inbound value is parsed here into typed objects
before anything is written. Bad values are refused with a code naming what is wrong."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

from storyroom import fields
from storyroom.capture import layout
from storyroom.errors import InvalidInput, PayloadTooLarge

CHUNK_MAX_BYTES: Final = 256 * 1024
"""One chunk: about 16 s of Opus at 128 kbit/s (the pages send ~1 s, ~16 KiB)."""
RUN_MAX_BYTES: Final = 256 * 1024 * 1024
"""One run: over four hours at 128 kbit/s; a take is about 40 minutes."""
RUNS_MAX: Final = 100
"""Runs per seat and take (each page reload starts one)."""
SEQ_MAX: Final = 1_000_000
MIME_MAX: Final = 100
REC_START_MAX: Final = 7 * 24 * 3600.0

_MIME_RE: Final = re.compile(
    r'^[a-z0-9]+/[a-z0-9.+-]+( ?; ?[a-z0-9-]+=("[a-z0-9.,+ -]*"|[a-z0-9.,+-]+))*$'
)
_SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
HEAD_BYTES: Final = 8
"""How much of a run's start `check_head` needs to know its container."""
# Each container's first bytes: (offset, signature). MP4 starts with a box size.
_SIGNATURES: Final = {
    ".webm": (0, b"\x1a\x45\xdf\xa3"),
    ".ogg": (0, b"OggS"),
    ".mp4": (4, b"ftyp"),
}


@dataclass(frozen=True, slots=True)
class RunOpenIn:
    """A browser starting (or retrying the start of) a capture run."""

    mime: str
    rec_start: float
    server_start: float
    key: str


@dataclass(frozen=True, slots=True)
class ChunkIn:
    """One chunk of a run, as uploaded."""

    seq: int
    data: bytes
    sha256: str
    recorded: int
    """Chunks the browser has recorded in this run so far (at least seq + 1)."""


def mime_type(value: Any) -> str:
    """A recorder MIME type of a container the capture takes (`audio/webm;codecs=opus`)."""
    if not isinstance(value, str) or not value or len(value) > MIME_MAX:
        raise InvalidInput("mime must be a MIME type", code="invalid_mime")
    mime = value.strip().lower()
    if not _MIME_RE.match(mime):
        raise InvalidInput("mime must be a MIME type", code="invalid_mime")
    if layout.container_suffix(mime) is None:
        raise InvalidInput(
            "the capture must be audio/webm, audio/ogg or audio/mp4", code="unsupported_mime"
        )
    return mime


def _seconds(value: Any, field: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a number of seconds", code="invalid_type")
    if not low <= value <= high:
        raise InvalidInput(f"{field} is out of range", code="invalid_value")
    return float(value)


def parse_open(payload: Any) -> RunOpenIn:
    given = fields.obj(payload, {"mime", "rec_start", "server_start", "key"}, {"mime", "key"})
    return RunOpenIn(
        mime=mime_type(given["mime"]),
        rec_start=_seconds(given.get("rec_start", 0.0), "rec_start", 0.0, REC_START_MAX),
        server_start=_seconds(given.get("server_start", 0.0), "server_start", 0.0, 1e11),
        key=fields.identifier(given["key"], "key", "a run key (letters, digits, _ and -)"),
    )


def parse_close(payload: Any) -> int:
    """The chunk count a browser says its finished run has."""
    given = fields.obj(payload, {"chunks"}, {"chunks"})
    chunks = fields.whole_number(given["chunks"], "chunks")
    if not 0 <= chunks <= SEQ_MAX:
        raise InvalidInput("chunks is out of range", code="invalid_value")
    return chunks


def check_head(mime: str, head: bytes) -> None:
    """Refuse a run whose first bytes (`head`: as many as have come, up to `HEAD_BYTES`)
    cannot start a file of its type. A recorder's first chunk may be a single byte, so
    the check waits for the bytes it needs and refuses only what contradicts them."""
    suffix = layout.container_suffix(mime)
    if suffix is None:
        raise InvalidInput(
            "the capture must be audio/webm, audio/ogg or audio/mp4", code="unsupported_mime"
        )
    offset, signature = _SIGNATURES[suffix]
    seen = head[offset : offset + len(signature)]
    if not signature.startswith(seen):
        raise InvalidInput(
            f"the capture does not start a {mime.split(';')[0]} file", code="not_audio"
        )


def parse_chunk(seq: int, data: bytes, sha256: str | None, recorded: str | None) -> ChunkIn:
    """A chunk's body and headers: not empty, not too large, its digest well-formed."""
    if not data:
        raise InvalidInput("the chunk is empty", code="empty_chunk")
    if len(data) > CHUNK_MAX_BYTES:
        raise PayloadTooLarge(f"a chunk may have at most {CHUNK_MAX_BYTES} bytes")
    claimed = (sha256 or "").strip().lower()
    if not _SHA256_RE.match(claimed):
        raise InvalidInput("send the chunk's sha256 (hex) in X-Chunk-Sha256", code="missing_digest")
    count = seq + 1
    if recorded:
        if not recorded.isdigit() or len(recorded) > 7:
            raise InvalidInput("X-Capture-Recorded must be a whole number", code="invalid_value")
        count = max(count, int(recorded))
    return ChunkIn(seq=seq, data=data, sha256=claimed, recorded=count)
