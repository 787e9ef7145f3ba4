"""Opus packets of a known tone and a plain Ogg page parser, for checking the stems."""

from __future__ import annotations

import fractions
import struct
from dataclasses import dataclass

import av
import numpy as np

RATE = 48_000
FRAME = 960
TONE_HZ = 440.0


def encode_tone(seconds: float, frequency: float = TONE_HZ) -> list[bytes]:
    """20 ms Opus packets of a sine tone from a real libopus encoder."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = 64_000
    encoder.time_base = fractions.Fraction(1, RATE)
    total = int(seconds * RATE) // FRAME * FRAME
    t = np.arange(total) / RATE
    pcm = (np.sin(2 * np.pi * frequency * t) * 12_000).astype(np.int16)
    packets: list[bytes] = []
    for start in range(0, total, FRAME):
        frame = av.AudioFrame.from_ndarray(
            pcm[None, start : start + FRAME], format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, RATE)
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets


@dataclass
class Page:
    offset: int
    header_type: int
    granule: int
    serial: int
    sequence: int
    crc: int
    segments: int
    size: int


def read_pages(data: bytes) -> list[Page]:
    """Parse complete Ogg pages from the start of ``data``; stop at a partial one."""
    pages = []
    offset = 0
    while offset + 27 <= len(data):
        magic, _version, header_type, granule, serial, sequence, crc, segments = struct.unpack_from(
            "<4sBBqIIIB", data, offset
        )
        assert magic == b"OggS"
        if offset + 27 + segments > len(data):
            break
        body = sum(data[offset + 27 : offset + 27 + segments])
        size = 27 + segments + body
        if offset + size > len(data):
            break
        pages.append(Page(offset, header_type, granule, serial, sequence, crc, segments, size))
        offset += size
    return pages
