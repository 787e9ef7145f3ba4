"""Ogg Opus (RFC 7845) on the Ogg page layer (:mod:`storyroom.recording.ogg`): the
recorded stems' writer and reader.

The recorder hands every received Opus packet, untouched, to an
:class:`OggOpusWriter`; a worker thread calls :meth:`OggOpusWriter.flush` about
every half second. Every flush appends only complete Ogg pages and fsyncs, so a
process killed at any moment leaves a file that decodes up to the last flushed
page. Finalization reads the stems back with :class:`OggOpusReader`, which places
every packet by its page's granule and describes what it could not read.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, Final

from storyroom.recording import ogg

__all__ = [
    "OPUS_SAMPLE_RATE",
    "PRE_SKIP",
    "Hole",
    "NotOpus",
    "OggOpusReader",
    "OggOpusWriter",
    "is_loss_filler",
    "opus_packet_samples",
]

OPUS_SAMPLE_RATE: Final = 48_000

# Pre-skip is 0, not the usual 312 (libopus' look-ahead at 48 kHz). The packets
# come from a browser's encoder that has been running since the call started; we
# never store its first packet, so there is no encoder delay of ours to hide, and
# the decoded sample n of a stem then sits exactly at granule position n, which
# keeps the mapping from RTP timestamps to the recording timeline a plain offset.
# The price is that the decoder's first few milliseconds of each segment are its
# convergence output rather than being discarded.
PRE_SKIP: Final = 0

VENDOR: Final = "storyroom"

_MAX_FRAME_BYTES: Final = 1275
_MAX_PACKET_SAMPLES: Final = 5760  # 120 ms, RFC 6716 §3.2.5
_PLC_UNIT: Final = 120  # 2.5 ms, the smallest Opus frame and so the finest gap
_FILLER_20MS: Final = (31 << 3) | 3  # CELT FB 20 ms frames, code 3 (any count, CBR)
_FILLER_2_5MS: Final = (28 << 3) | 3  # CELT FB 2.5 ms frames, code 3
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})

# Samples at 48 kHz of one frame for each TOC configuration (RFC 6716 §3.1, Table 2).
_FRAME_SAMPLES: Final = (
    (480, 960, 1920, 2880) * 3  # SILK NB, MB, WB: 10, 20, 40, 60 ms
    + (480, 960) * 2  # Hybrid SWB, FB: 10, 20 ms
    + (120, 240, 480, 960) * 4  # CELT NB, WB, SWB, FB: 2.5, 5, 10, 20 ms
)


def opus_packet_samples(payload: bytes) -> int:
    """Return the duration of an Opus packet in samples at 48 kHz.

    Reads the TOC byte and the frame count (codes 0-3, RFC 6716 §3.1-3.2) and
    checks the packet's framing against requirements R1-R7 of §3.4. Returns 0
    for an empty or malformed packet, which callers treat as "skip".
    """
    size = len(payload)
    if size == 0:
        return 0
    toc = payload[0]
    frame_samples = _FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    body = size - 1
    if code == 0:
        return frame_samples if body <= _MAX_FRAME_BYTES else 0
    if code == 1:
        if body % 2 or body // 2 > _MAX_FRAME_BYTES:
            return 0
        return 2 * frame_samples
    if code == 2:
        parsed = _frame_length(payload, 1)
        if parsed is None:
            return 0
        first, offset = parsed
        second = size - offset - first
        if second < 0 or second > _MAX_FRAME_BYTES:
            return 0
        return 2 * frame_samples
    return _code3_samples(payload, frame_samples)


def _frame_length(payload: bytes, offset: int) -> tuple[int, int] | None:
    """Decode a 1- or 2-byte frame length at ``offset`` (RFC 6716 §3.2.1)."""
    if offset >= len(payload):
        return None
    first = payload[offset]
    if first < 252:
        return first, offset + 1
    if offset + 1 >= len(payload):
        return None
    return first + 4 * payload[offset + 1], offset + 2


def _code3_samples(payload: bytes, frame_samples: int) -> int:
    """Duration of a code 3 (arbitrary frame count) packet, 0 when malformed."""
    size = len(payload)
    if size < 2:
        return 0
    count_byte = payload[1]
    vbr = bool(count_byte & 0x80)
    has_padding = bool(count_byte & 0x40)
    frames = count_byte & 0x3F
    if frames == 0 or frames * frame_samples > _MAX_PACKET_SAMPLES:
        return 0
    offset = 2
    padding = 0
    if has_padding:
        while True:
            if offset >= size:
                return 0
            value = payload[offset]
            offset += 1
            padding += 254 if value == 255 else value
            if value != 255:
                break
    remaining = size - offset - padding
    if remaining < 0:
        return 0
    if vbr:
        lengths = 0
        for _ in range(frames - 1):
            parsed = _frame_length(payload, offset)
            if parsed is None:
                return 0
            length, next_offset = parsed
            remaining -= next_offset - offset
            offset = next_offset
            if length > _MAX_FRAME_BYTES:
                return 0
            lengths += length
        last = remaining - lengths
        if last < 0 or last > _MAX_FRAME_BYTES:
            return 0
    elif remaining % frames or remaining // frames > _MAX_FRAME_BYTES:
        return 0
    return frames * frame_samples


def _plc_packets(samples: int) -> list[bytes]:
    """Packets of zero-length CELT frames that ask the decoder for ``samples`` of
    packet-loss concealment (RFC 7845 §4.1: a muxer repairs gaps this way).

    ``samples`` must be a multiple of 120 (2.5 ms).
    """
    packets: list[bytes] = []
    twenty_ms, rest = divmod(samples, 960)
    while twenty_ms:
        frames = min(twenty_ms, _MAX_PACKET_SAMPLES // 960)
        packets.append(bytes((_FILLER_20MS, frames)))  # zero-length frames, no padding
        twenty_ms -= frames
    if rest:
        packets.append(bytes((_FILLER_2_5MS, rest // _PLC_UNIT)))
    return packets


def is_loss_filler(payload: bytes) -> bool:
    """Whether `payload` is one of the writer's gap fillers (:func:`_plc_packets`): it
    stands for packets lost in transit, not for anything the sender encoded."""
    return (
        len(payload) == 2 and payload[0] in (_FILLER_20MS, _FILLER_2_5MS) and 0 < payload[1] <= 0x3F
    )


def _opus_head() -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", 1, 1, PRE_SKIP, OPUS_SAMPLE_RATE, 0, 0)


def _opus_tags(comments: Mapping[str, str]) -> bytes:
    vendor = VENDOR.encode()
    parts = [b"OpusTags", struct.pack("<I", len(vendor)), vendor]
    parts.append(struct.pack("<I", len(comments)))
    for key, value in comments.items():
        if not key or any(not 0x20 <= ord(c) <= 0x7D or c == "=" for c in key):
            raise ValueError(f"invalid Ogg comment name {key!r}")
        entry = f"{key}={value}".encode()
        parts += [struct.pack("<I", len(entry)), entry]
    return b"".join(parts)


class OggOpusWriter:
    """Writes one mono Ogg Opus file from already-encoded Opus packets.

    :meth:`add_packet` only buffers (cheap, any thread); :meth:`flush` and
    :meth:`close` block on disk I/O and belong on a worker thread.

    Ogg Opus cannot express gaps, so when a packet starts later than the previous
    one ended (lost packets, a paused sender) the writer fills the gap with
    packet-loss-concealment packets; decoded sample ``n`` is then always at
    granule position ``n``. A packet that starts before the previous one ended
    (duplicate, reordered, or a timestamp that went backwards) is skipped.
    """

    def __init__(self, path: Path, serial: int, comments: Mapping[str, str] = _EMPTY) -> None:
        """Create ``path`` (it must not exist) and durably write the two header pages.

        ``serial`` is the Ogg stream serial number; ``comments`` become
        ``KEY=value`` entries in OpusTags.
        """
        self._serial = serial & 0xFFFFFFFF
        self._sequence = 0
        self._lock = threading.Lock()  # guards _pending and _end_granule
        self._io_lock = threading.Lock()  # guards the file and page sequence
        self._pending: list[tuple[bytes, int]] = []
        self._end_granule: int | None = None
        self._last_page_granule = 0
        self._closed = False
        self._path = path
        self._synced_size = 0  # bytes on disk that end with a complete page
        tags = _opus_tags(comments)
        self._file: BinaryIO = open(path, "xb")  # owned until close()
        try:
            self._write_pages([(_opus_head(), 0)], first_type=ogg.BOS)
            self._write_pages([(tags, 0)])
            self._sync()
            fsync_directory(path.parent)
        except BaseException:
            self._file.close()
            raise

    @property
    def granule(self) -> int:
        """End sample position of the last accepted packet (0 before any)."""
        with self._lock:
            return self._end_granule or 0

    def add_packet(self, payload: bytes, granule: int) -> None:
        """Buffer one Opus packet whose last sample is at ``granule``.

        ``granule`` is the end sample position at 48 kHz (pre-skip included, which
        is 0 here). Empty or malformed packets and packets that overlap the
        previous one are skipped; so is everything after :meth:`close`.
        """
        samples = opus_packet_samples(payload)
        if samples == 0:
            return
        start = granule - samples
        with self._lock:
            if self._closed:
                return
            end = self._end_granule
            if end is None:
                # The first packet fixes the stream's start offset (RFC 7845 §4.5).
                start = end = max(start, 0)
            gap = start - end
            if gap < 0:
                return
            gap -= gap % _PLC_UNIT
            if gap:
                for filler in _plc_packets(gap):
                    end += opus_packet_samples(filler)
                    self._pending.append((filler, end))
            end += samples
            self._pending.append((bytes(payload), end))
            self._end_granule = end

    def flush(self) -> int:
        """Write all buffered packets as complete pages, then fsync.

        Blocking; call it from a worker thread. Returns the bytes written.
        """
        with self._io_lock:
            if self._file.closed:
                return 0
            with self._lock:
                packets, self._pending = self._pending, []
            if not packets:
                return 0
            written = self._write_pages(packets)
            self._sync()
            return written

    def close(self) -> None:
        """Write what is buffered, end the stream with an EOS page, fsync and close.

        Idempotent. Blocking, like :meth:`flush`.
        """
        with self._io_lock:
            with self._lock:
                self._closed = True
                packets, self._pending = self._pending, []
            if self._file.closed:
                return
            try:
                if packets:
                    self._write_pages(packets, last_type=ogg.EOS)
                else:
                    self._write_page(ogg.EOS, self._last_page_granule, b"", b"")
                self._sync()
            finally:
                self._file.close()

    def abandon(self) -> None:
        """The disk refused a write (full, quota, I/O error): cut the file back to its
        last complete, synced page and close it, so it decodes up to there.

        No EOS page (there may be no room for one; decoders do not need it, as after a
        crash). Idempotent; nothing buffered is written. Blocking, like :meth:`flush`.
        """
        with self._io_lock:
            with self._lock:
                self._closed = True
                self._pending = []
            if not self._file.closed:
                try:
                    self._file.close()  # may try to write its buffer and fail again
                except OSError:
                    pass
            # Truncating needs no free space; it drops a torn page a failed write left.
            os.truncate(self._path, self._synced_size)
            fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._synced_size = self._file.tell()

    def _write_page(self, header_type: int, granule: int, lacing: bytes, body: bytes) -> int:
        page = ogg.page(header_type, granule, self._serial, self._sequence, lacing, body)
        self._sequence += 1
        if granule != ogg.NO_GRANULE:
            self._last_page_granule = granule
        self._file.write(page)
        return len(page)

    def _write_pages(
        self,
        packets: Iterable[tuple[bytes, int]],
        first_type: int = 0,
        last_type: int = 0,
    ) -> int:
        """Write ``packets`` as pages; the last page of this call gets ``last_type``."""
        return sum(
            self._write_page(layout.header_type, layout.granule, layout.lacing, layout.body)
            for layout in ogg.paginate(packets, first_type, last_type)
        )


def fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading ------------------------------------------------------------------------------------


class NotOpus(Exception):
    """The file is not a readable Ogg Opus stream."""


@dataclass(frozen=True, slots=True)
class Hole:
    """Granules [start, end) of a stem that could not be read; end None: to the end."""

    start: int
    end: int | None
    corrupt: bool
    """True: a page failed its checksum; False: pages are missing (sequence skipped)."""


class OggOpusReader:
    """Reads a one-stream Ogg Opus file page by page, checking every page's CRC.

    Yields ``(packet, granule_end)`` for each audio packet; damaged stretches are
    skipped and described in :attr:`holes` (granule units), so a caller never loses
    its place: a packet's position comes from its page's granule, not from counting.
    """

    def __init__(self, path: Path) -> None:
        self.pages = ogg.OggReader(path)
        self.head: bytes | None = None
        """The OpusHead packet, once read."""
        self.holes: list[Hole] = []

    def packets(self) -> Iterator[tuple[bytes, int]]:
        """Raises :class:`NotOpus` if the stream does not begin with OpusHead."""
        headers = 0
        end: int | None = None  # granule end of the last packet yielded
        corrupt = False  # a bad page since the last page with audio
        for page in self.pages.packets():
            corrupt = corrupt or page.after_damage
            completed = page.packets
            while headers < 2 and completed:
                packet = completed.pop(0)
                if headers == 0:
                    if not packet.startswith(b"OpusHead"):
                        raise NotOpus("the file is not an Ogg Opus stream")
                    self.head = packet
                headers += 1
            if not completed or page.granule < 0:
                corrupt = corrupt and not completed
                continue
            durations = [opus_packet_samples(p) for p in completed]
            start = page.granule - sum(durations)
            if end is not None and start > end:
                self.holes.append(Hole(end, start, corrupt))
            corrupt = False
            for packet, samples in zip(completed, durations, strict=True):
                start += samples
                if samples:
                    end = start
                    yield packet, start
        if headers == 0 and self.pages.bytes:
            raise NotOpus("the file has no readable Ogg Opus header")
        if corrupt or self.pages.damaged_tail:
            self.holes.append(Hole(end or 0, None, True))
