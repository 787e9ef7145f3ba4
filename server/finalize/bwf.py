"""Broadcast WAV (EBU Tech 3285) writing, streamed.

A :class:`BroadcastWavWriter` writes a RIFF/WAVE file whose metadata is known up front
(`bext`, `fmt `, `LIST`/`INFO`, `cue ` with `LIST`/`adtl` labels) and whose PCM data
arrives in blocks. Sizes are patched when the file is closed. A `JUNK` chunk reserves
room for the RF64 `ds64` chunk (EBU Tech 3306), so a file that outgrows 4 GiB becomes
RF64 in place instead of failing.

Chunk order: `JUNK`, `bext`, `fmt `, `LIST`/`INFO`, `cue `, `LIST`/`adtl`, `data`;
every chunk a reader needs comes before the audio.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

__all__ = ["Bext", "BroadcastWavWriter", "CuePoint"]

_WAVE_FORMAT_PCM: Final = 1
_BEXT_VERSION: Final = 2
_UNUSED_LOUDNESS: Final = 0x7FFF  # EBU Tech 3285 v2: "not used"
_DS64_SIZE: Final = 28  # riffSize u64, dataSize u64, sampleCount u64, tableLength u32
_U32_MAX: Final = 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class Bext:
    """The `bext` chunk's fields (EBU Tech 3285 version 2)."""

    description: str
    originator: str
    originator_reference: str
    origination_date: str
    """``yyyy-mm-dd``"""
    origination_time: str
    """``hh:mm:ss``"""
    time_reference: int
    """First sample's position, in samples since midnight."""
    coding_history: str
    loudness_value: float | None = None
    """Integrated loudness, LUFS."""
    loudness_range: float | None = None
    """LU."""
    max_true_peak_level: float | None = None
    """dBTP."""


@dataclass(frozen=True, slots=True)
class CuePoint:
    """A labelled point (`cue ` + `adtl`/`labl`) at a sample frame of the data."""

    sample: int
    label: str


def _ascii(text: str) -> bytes:
    """bext text fields are ASCII: keep letters, drop accents (e.g. "Qué" → "Que")."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore")


def _fixed(text: str, size: int) -> bytes:
    return _ascii(text)[:size].ljust(size, b"\0")


def _loudness(value: float | None) -> int:
    if value is None:
        return _UNUSED_LOUDNESS
    return max(-0x8000, min(0x7FFE, round(value * 100)))


def _chunk(ident: bytes, body: bytes) -> bytes:
    pad = b"\0" if len(body) % 2 else b""
    return ident + struct.pack("<I", len(body)) + body + pad


def _zstring(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


def bext_chunk(bext: Bext) -> bytes:
    body = b"".join(
        (
            _fixed(bext.description, 256),
            _fixed(bext.originator, 32),
            _fixed(bext.originator_reference, 32),
            _fixed(bext.origination_date, 10),
            _fixed(bext.origination_time, 8),
            struct.pack("<QH", bext.time_reference, _BEXT_VERSION),
            b"\0" * 64,  # UMID: none
            struct.pack(
                "<5h",
                _loudness(bext.loudness_value),
                _loudness(bext.loudness_range),
                _loudness(bext.max_true_peak_level),
                _UNUSED_LOUDNESS,  # MaxMomentaryLoudness
                _UNUSED_LOUDNESS,  # MaxShortTermLoudness
            ),
            b"\0" * 180,
            _ascii(bext.coding_history),
        )
    )
    return _chunk(b"bext", body)


def info_chunk(info: dict[str, str]) -> bytes:
    """`LIST`/`INFO` with four-character keys (INAM, ICRD, ISFT, ICMT, ...), UTF-8 text."""
    body = b"".join(
        _chunk(key.encode("ascii"), _zstring(value)) for key, value in info.items() if value
    )
    return _chunk(b"LIST", b"INFO" + body)


def cue_chunks(cues: list[CuePoint]) -> bytes:
    """`cue ` points (ids 1..n, in the order given) and their `LIST`/`adtl` labels."""
    if not cues:
        return b""
    points = b"".join(
        struct.pack("<II4sIII", ident, cue.sample, b"data", 0, 0, cue.sample)
        for ident, cue in enumerate(cues, 1)
    )
    labels = b"".join(
        _chunk(b"labl", struct.pack("<I", ident) + _zstring(cue.label))
        for ident, cue in enumerate(cues, 1)
    )
    return _chunk(b"cue ", struct.pack("<I", len(cues)) + points) + _chunk(
        b"LIST", b"adtl" + labels
    )


class BroadcastWavWriter:
    """Streams integer PCM into a Broadcast WAV file. Owner: whoever opened it; not
    thread-safe. Call :meth:`write` with interleaved little-endian sample bytes."""

    def __init__(
        self,
        path: Path,
        *,
        sample_rate: int,
        channels: int,
        bits: int,
        bext: Bext,
        info: dict[str, str],
        cues: list[CuePoint],
    ) -> None:
        self.path = path
        self.block_align = channels * bits // 8
        fmt = struct.pack(
            "<HHIIHH",
            _WAVE_FORMAT_PCM,
            channels,
            sample_rate,
            sample_rate * self.block_align,
            self.block_align,
            bits,
        )
        header = b"".join(
            (
                b"WAVE",
                _chunk(b"JUNK", b"\0" * _DS64_SIZE),
                bext_chunk(bext),
                _chunk(b"fmt ", fmt),
                info_chunk(info),
                cue_chunks(cues),
                b"data",
            )
        )
        self._data_size_at = 8 + len(header)
        self._data_bytes = 0
        self._file: BinaryIO = open(path, "xb")
        self._file.write(b"RIFF\0\0\0\0" + header + b"\0\0\0\0")

    def write(self, pcm: bytes) -> None:
        self._file.write(pcm)
        self._data_bytes += len(pcm)

    def close(self) -> None:
        """Pad the data chunk, patch the sizes (RF64 if past 4 GiB) and close. Idempotent."""
        if self._file.closed:
            return
        try:
            if self._data_bytes % 2:
                self._file.write(b"\0")
            riff_size = self._file.tell() - 8
            if riff_size <= _U32_MAX:
                self._file.seek(4)
                self._file.write(struct.pack("<I", riff_size))
                self._file.seek(self._data_size_at)
                self._file.write(struct.pack("<I", self._data_bytes))
            else:
                self._file.seek(0)
                self._file.write(b"RF64" + struct.pack("<I", _U32_MAX) + b"WAVE")
                self._file.write(
                    b"ds64"
                    + struct.pack(
                        "<IQQQI",
                        _DS64_SIZE,
                        riff_size,
                        self._data_bytes,
                        self._data_bytes // self.block_align,
                        0,
                    )
                )
                self._file.seek(self._data_size_at)
                self._file.write(struct.pack("<I", _U32_MAX))
        finally:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
