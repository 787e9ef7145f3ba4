"""Object names: the one module that says where a recording's bytes live in the bucket.

```
<prefix>recordings/<recording id>/raw/<file>/<first>-<end>   bytes [first, end) of <file>
<prefix>recordings/<recording id>/final/<name>               a finalized file
```
`<file>` is a path relative to the recording's folder (`recording.jsonl`,
`stems/a-01.opus`, `stems/a-01.timing.jsonl`); `<first>` and `<end>` are zero-padded to
twelve digits, so listing order is byte order. Raw objects are immutable: the objects of
one file, concatenated in byte order, give back the file as it was shipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

RAW: Final = "raw"
FINAL: Final = "final"
OFFSET_DIGITS: Final = 12
_RANGE: Final = re.compile(r"^(?P<first>\d{12})-(?P<end>\d{12})$")


@dataclass(frozen=True, slots=True)
class RawRange:
    """One raw object: bytes [first, end) of `file` in a recording's folder."""

    file: str
    first: int
    end: int


def recording_prefix(prefix: str, recording_id: str) -> str:
    """Every object of one recording starts with this (ids are server-generated)."""
    return f"{prefix}recordings/{recording_id}/"


def raw_prefix(prefix: str, recording_id: str) -> str:
    return f"{recording_prefix(prefix, recording_id)}{RAW}/"


def raw_key(prefix: str, recording_id: str, part: RawRange) -> str:
    return (
        f"{raw_prefix(prefix, recording_id)}{part.file}/"
        f"{part.first:0{OFFSET_DIGITS}d}-{part.end:0{OFFSET_DIGITS}d}"
    )


def parse_raw_key(prefix: str, recording_id: str, key: str) -> RawRange | None:
    """The range a raw object holds, or None for a key that is not one."""
    start = raw_prefix(prefix, recording_id)
    if not key.startswith(start):
        return None
    file, _, span = key[len(start) :].rpartition("/")
    match = _RANGE.match(span)
    if not file or match is None or ".." in file.split("/"):
        return None
    first, end = int(match["first"]), int(match["end"])
    return RawRange(file, first, end) if first < end else None


def final_key(prefix: str, recording_id: str, name: str) -> str:
    """A finalized file (`name` as the finalizer lists it, e.g. `stems/a.flac`)."""
    return f"{recording_prefix(prefix, recording_id)}{FINAL}/{name}"
