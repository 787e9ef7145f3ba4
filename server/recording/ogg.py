"""Ogg pages (RFC 3533): the one module that writes and reads them, with Ogg's CRC.

Writing: :func:`paginate` lays packets out on pages and :func:`page` makes a page's
bytes. Reading: :class:`OggReader` goes through a file page by page, checks every
page's CRC, skips damage to the next capture pattern and puts the packets of the
file's first logical stream back together; :func:`last_granule` reads the granule
position of the last intact page from the file's tail. What a codec puts in the
packets (Opus headers and packet durations) is :mod:`storyroom.recording.oggopus`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "BOS",
    "CONTINUED",
    "EOS",
    "NO_GRANULE",
    "OggReader",
    "Page",
    "PageLayout",
    "PagePackets",
    "crc32",
    "last_granule",
    "page",
    "paginate",
]

CAPTURE: Final = b"OggS"
PAGE_HEADER: Final = struct.Struct("<4sBBqIIIB")
"""capture, version, header type, granule, serial, sequence, CRC, segment count"""
CONTINUED: Final = 0x01
BOS: Final = 0x02
EOS: Final = 0x04
NO_GRANULE: Final = -1
"""The granule of a page on which no packet ends."""
MAX_SEGMENTS: Final = 255
_CRC_FIELD: Final = slice(22, 26)
_READ_SIZE: Final = 1 << 16
_BIT_REVERSED: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc32(data: bytes | bytearray) -> int:
    """Ogg's CRC-32 (RFC 3533 §6: polynomial 0x04c11db7, no reflection, zero
    initial value, no final XOR).

    Computed by zlib's (reflected) CRC-32 on bit-reversed bytes, reversed back: the
    same polynomial mirrored. A byte-by-byte Python loop took ~0.5 ms per page on
    the recorder's thread, holding the GIL the event loop needs to forward audio;
    this is ~100x faster, which also lets finalization check every page it reads."""
    register = zlib.crc32(bytes(data).translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{register:032b}"[::-1], 2)


def _intact(data: bytes | bytearray, at: int, size: int, crc: int) -> bool:
    """Whether the page of `size` bytes at `at` matches its CRC field's value `crc`."""
    raw = bytearray(data[at : at + size])
    raw[_CRC_FIELD] = b"\0\0\0\0"
    return crc32(raw) == crc


# -- writing ------------------------------------------------------------------------------------


def page(
    header_type: int, granule: int, serial: int, sequence: int, lacing: bytes, body: bytes
) -> bytes:
    """One page's bytes, its CRC filled in."""
    header = PAGE_HEADER.pack(CAPTURE, 0, header_type, granule, serial, sequence, 0, len(lacing))
    raw = bytearray(header + lacing + body)
    struct.pack_into("<I", raw, _CRC_FIELD.start, crc32(raw))
    return bytes(raw)


@dataclass(frozen=True, slots=True)
class PageLayout:
    """A page's content before it is numbered: header type, granule, lacing and body."""

    header_type: int
    granule: int
    lacing: bytes
    body: bytes


def paginate(
    packets: Iterable[tuple[bytes, int]], first_type: int = 0, last_type: int = 0
) -> list[PageLayout]:
    """Lay ``(payload, granule)`` packets out on pages of at most 255 segments.

    Pages break at packet boundaries; only a packet too big for one page continues on
    the next. The first page gets ``first_type``, the last ``last_type``; no packets
    make one empty page."""
    pages: list[PageLayout] = []
    lacing = bytearray()
    body = bytearray()
    granule = NO_GRANULE
    header_type = first_type

    def finish_page() -> None:
        nonlocal lacing, body, granule, header_type
        pages.append(PageLayout(header_type, granule, bytes(lacing), bytes(body)))
        lacing, body, granule, header_type = bytearray(), bytearray(), NO_GRANULE, 0

    for payload, packet_granule in packets:
        values = [255] * (len(payload) // 255) + [len(payload) % 255]
        if lacing and len(lacing) + len(values) > MAX_SEGMENTS:
            finish_page()
        offset = 0
        while len(lacing) + len(values) > MAX_SEGMENTS:
            room = MAX_SEGMENTS - len(lacing)
            lacing += bytes(values[:room])
            body += payload[offset : offset + 255 * room]
            offset += 255 * room
            values = values[room:]
            finish_page()
            header_type |= CONTINUED
        lacing += bytes(values)
        body += payload[offset:]
        granule = packet_granule
    if lacing or not pages:
        finish_page()
    last = pages[-1]
    pages[-1] = PageLayout(last.header_type | last_type, last.granule, last.lacing, last.body)
    return pages


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    """An intact page as read."""

    header_type: int
    granule: int
    serial: int
    sequence: int
    lacing: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class PagePackets:
    """The packets that end on one page of the stream, in order."""

    packets: list[bytes]
    granule: int
    after_damage: bool
    """A damaged stretch (a page failing its CRC, or garbage) was skipped just before
    this page."""


class OggReader:
    """Reads an Ogg file page by page, checking every page's CRC.

    A damaged stretch is skipped to the next capture pattern and never stops the
    reading; :attr:`torn_tail` says the file ends inside a page (cut off, e.g. by a
    crash) and :attr:`damaged_tail` that a damaged stretch came after the last page
    of the stream.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes = path.stat().st_size
        self.torn_tail = False
        self.damaged_tail = False

    def packets(self) -> Iterator[PagePackets]:
        """The first logical stream's pages, each with the packets that end on it.

        A packet whose start was lost (to damage, a missing page, or a page that
        continues a packet it never saw begin) is dropped, never returned in part."""
        serial: int | None = None
        last_sequence: int | None = None
        pending: bytes | None = None  # the start of a packet continued on the next page
        damaged = False
        for read in self.pages():
            if read is None:
                damaged = True
                continue
            if serial is None:
                serial = read.serial
            elif read.serial != serial:
                continue
            missing = last_sequence is not None and read.sequence != last_sequence + 1
            last_sequence = read.sequence
            continued = bool(read.header_type & CONTINUED)
            if damaged or missing or not continued:
                pending = None
            drop_first = continued and pending is None
            completed: list[bytes] = []
            chunk = bytearray(pending or b"")
            offset = 0
            for value in read.lacing:
                chunk += read.body[offset : offset + value]
                offset += value
                if value < 255:
                    if drop_first:
                        drop_first = False
                    else:
                        completed.append(bytes(chunk))
                    chunk = bytearray()
            if read.lacing:
                ends_open = read.lacing[-1] == 255 and not drop_first
                pending = bytes(chunk) if ends_open else None
            yield PagePackets(completed, read.granule, damaged)
            damaged = False
        self.damaged_tail = damaged

    def pages(self) -> Iterator[Page | None]:
        """Each intact page, or None for a damaged stretch that was skipped."""
        buffer = bytearray()
        position = 0
        eof = False
        with open(self.path, "rb") as f:

            def have(n: int) -> bool:
                nonlocal buffer, position, eof
                while len(buffer) - position < n and not eof:
                    data = f.read(_READ_SIZE)
                    if not data:
                        eof = True
                        break
                    if position:
                        del buffer[:position]
                        position = 0
                    buffer += data
                return len(buffer) - position >= n

            while have(PAGE_HEADER.size):
                capture, version, header_type, granule, serial, sequence, crc, count = (
                    PAGE_HEADER.unpack_from(buffer, position)
                )
                size = 0
                valid = capture == CAPTURE and version == 0
                if valid and have(PAGE_HEADER.size + count):
                    lacing_at = position + PAGE_HEADER.size
                    lacing = bytes(buffer[lacing_at : lacing_at + count])
                    size = PAGE_HEADER.size + count + sum(lacing)
                    if not have(size):
                        self.torn_tail = True
                        return
                    valid = _intact(buffer, position, size, crc)
                elif valid:
                    self.torn_tail = True
                    return
                if not valid:
                    yield None
                    position += 1
                    resync = buffer.find(CAPTURE, position)
                    while resync < 0 and not eof:
                        # keep the last 3 bytes: they may begin a capture pattern
                        position = max(position, len(buffer) - 3)
                        have(len(buffer) - position + _READ_SIZE)
                        resync = buffer.find(CAPTURE, position)
                    if resync < 0:
                        self.torn_tail = True
                        return
                    position = resync
                    continue
                body = bytes(buffer[position + PAGE_HEADER.size + count : position + size])
                position += size
                yield Page(header_type, granule, serial, sequence, lacing, body)
            if len(buffer) > position:
                self.torn_tail = True


def last_granule(path: Path) -> int:
    """Granule of the last intact page of an Ogg file, from its tail (0 if none)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - _READ_SIZE))
        tail = f.read()
    at = tail.rfind(CAPTURE)
    while at >= 0:
        if len(tail) - at >= PAGE_HEADER.size:
            header = PAGE_HEADER.unpack_from(tail, at)
            count = header[7]
            lacing = tail[at + PAGE_HEADER.size : at + PAGE_HEADER.size + count]
            size = PAGE_HEADER.size + count + sum(lacing)
            if (
                len(lacing) == count
                and at + size <= len(tail)
                and _intact(tail, at, size, header[6])
                and header[3] >= 0
            ):
                return int(header[3])
        at = tail.rfind(CAPTURE, 0, at)
    return 0
