"""The Ogg Opus writer, checked by decoding its files with PyAV's FFmpeg."""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import av
import numpy as np
import pytest

from storyroom.recording import ogg
from storyroom.recording.oggopus import Hole, OggOpusReader, OggOpusWriter, opus_packet_samples
from support.ogg import FRAME, RATE, TONE_HZ, encode_tone, read_pages


@pytest.fixture(scope="module")
def tone_packets() -> list[bytes]:
    return encode_tone(8.0)


def decode(path: Path) -> np.ndarray:
    """All samples of the file's first audio stream, mono float."""
    chunks = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.sample_rate == RATE
        assert stream.codec_context.channels == 1
        for frame in container.decode(stream):
            chunks.append(frame.to_ndarray().astype(np.float64).reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0)


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * RATE / len(samples))


def assert_holds_the_tone(path: Path, packets: int) -> None:
    """The file decodes to exactly `packets` frames of the tone (its second second)."""
    samples = decode(path)
    assert len(samples) == packets * FRAME
    assert dominant_frequency(samples[RATE : 2 * RATE]) == pytest.approx(TONE_HZ, abs=2)


def write_file(path: Path, packets: list[bytes], flush_every: int) -> OggOpusWriter:
    writer = OggOpusWriter(path, serial=0x5EED, comments={"TITLE": "tone", "SEAT": "a"})
    for index, payload in enumerate(packets, start=1):
        writer.add_packet(payload, index * FRAME)
        if index % flush_every == 0:
            writer.flush()
    return writer


def test_round_trip_duration_tone_and_page_structure(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    path = tmp_path / "a.opus"
    # One flush for everything: 400 packets need more than one 255-segment page.
    writer = write_file(path, tone_packets, flush_every=len(tone_packets) + 1)
    assert writer.flush() > 0
    writer.close()
    writer.close()

    assert_holds_the_tone(path, packets=len(tone_packets))

    data = path.read_bytes()
    pages = read_pages(data)
    assert sum(page.size for page in pages) == len(data)
    assert [page.sequence for page in pages] == list(range(len(pages)))
    assert {page.serial for page in pages} == {0x5EED}
    assert [page.header_type for page in pages] == [0x02] + [0] * (len(pages) - 2) + [0x04]
    assert all(page.segments <= 255 for page in pages)
    assert len(pages) >= 4
    assert pages[-1].granule == len(tone_packets) * FRAME
    granules = [page.granule for page in pages]
    assert granules == sorted(granules)
    for page in pages:
        raw = bytearray(data[page.offset : page.offset + page.size])
        raw[22:26] = b"\0\0\0\0"
        assert ogg.crc32(raw) == page.crc

    head = data[pages[0].offset + 28 : pages[0].offset + pages[0].size]
    assert head[:8] == b"OpusHead"
    version, channels, pre_skip, rate, gain, family = struct.unpack("<BBHIhB", head[8:19])
    assert (version, channels, pre_skip, rate, gain, family) == (1, 1, 0, RATE, 0, 0)
    with av.open(str(path)) as container:
        tags = {k.upper(): v for k, v in container.streams.audio[0].metadata.items()}
        tags |= {k.upper(): v for k, v in container.metadata.items()}
    assert tags.get("TITLE") == "tone"
    assert tags.get("SEAT") == "a"


def test_crc_matches_ffmpeg_and_bad_crc_is_rejected(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    # Our CRC reproduces the CRCs of pages written by FFmpeg's own Ogg muxer.
    reference = tmp_path / "ffmpeg.ogg"
    with av.open(str(reference), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=RATE)
        stream.layout = "mono"
        for start in range(0, RATE, FRAME):
            pcm = (np.sin(2 * np.pi * TONE_HZ * (np.arange(FRAME) + start) / RATE) * 9000).astype(
                np.int16
            )
            frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = reference.read_bytes()
    pages = read_pages(data)
    assert len(pages) >= 3
    for page in pages:
        raw = bytearray(data[page.offset : page.offset + page.size])
        raw[22:26] = b"\0\0\0\0"
        assert ogg.crc32(raw) == page.crc

    # FFmpeg checks the CRC: a page whose CRC field is wrong is not decoded.
    path = tmp_path / "ours.opus"
    write_file(path, tone_packets[:100], flush_every=25).close()
    good = decode(path)
    assert len(good) == 100 * FRAME
    corrupt = bytearray(path.read_bytes())
    third_audio_page = read_pages(bytes(corrupt))[4]
    corrupt[third_audio_page.offset + 22] ^= 0xFF
    bad_path = tmp_path / "bad-crc.opus"
    bad_path.write_bytes(corrupt)
    assert len(decode(bad_path)) == 75 * FRAME


def test_reader_gives_back_what_was_written_and_names_what_it_could_not_read(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    """Every packet at its granule; a page that fails its CRC is a corrupt hole, a page
    that is not there a missing one, a cut in the last page a torn tail."""
    # a packet too big for one page (one 20 ms frame, ~76 kB of padding) continues on
    # the next: it must come back whole
    padding = 254 * 300 + 10
    large = bytes([(31 << 3) | 3, 0x40 | 1, *[255] * 300, 10, *range(100)]) + bytes(padding)
    assert opus_packet_samples(large) == FRAME
    packets = [*tone_packets[:30], large, *tone_packets[30:60]]
    whole = tmp_path / "whole.opus"
    write_file(whole, packets, flush_every=25).close()
    reader = OggOpusReader(whole)
    read = list(reader.packets())
    assert read == [(p, n * FRAME) for n, p in enumerate(packets, start=1)]
    assert reader.head is not None and reader.head.startswith(b"OpusHead")
    assert (reader.holes, reader.pages.torn_tail) == ([], False)

    path = tmp_path / "a.opus"
    write_file(path, tone_packets[:200], flush_every=25).close()
    data = path.read_bytes()
    pages = read_pages(data)  # 0, 1: headers; then 25 packets a page
    damaged = bytearray(data)
    damaged[pages[3].offset + 40] ^= 0xFF
    del damaged[pages[5].offset : pages[5].offset + pages[5].size]
    cut = tmp_path / "damaged.opus"
    cut.write_bytes(damaged[: len(damaged) - 10])
    reader = OggOpusReader(cut)
    granules = [granule for _, granule in reader.packets()]
    assert reader.holes == [
        Hole(pages[2].granule, pages[3].granule, corrupt=True),
        Hole(pages[4].granule, pages[5].granule, corrupt=False),
    ]
    assert pages[3].granule not in granules and pages[4].granule in granules
    assert reader.pages.torn_tail


def test_truncated_in_the_middle_of_the_last_page(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    path = tmp_path / "a.opus"
    write_file(path, tone_packets[:200], flush_every=25).close()
    data = path.read_bytes()
    pages = read_pages(data)
    last = pages[-2]  # the last page with audio (the final one is the EOS page)
    cut = tmp_path / "cut.opus"
    cut.write_bytes(data[: last.offset + last.size // 2])
    samples = decode(cut)
    assert len(samples) == pages[-3].granule == 175 * FRAME
    assert dominant_frequency(samples[RATE : 2 * RATE]) == pytest.approx(TONE_HZ, abs=2)


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from storyroom.recording.oggopus import OggOpusWriter

packets = []
with open(sys.argv[2], "rb") as source:
    while header := source.read(2):
        packets.append(source.read(int.from_bytes(header, "big")))
writer = OggOpusWriter(Path(sys.argv[1]), serial=7)
for index, payload in enumerate(packets, start=1):
    writer.add_packet(payload, index * 960)
    if index % 25 == 0:
        writer.flush()
print("flushed", flush=True)
time.sleep(60)
"""


def test_writer_killed_without_close_decodes_up_to_last_flush(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    packets = tone_packets[:110]  # flushed up to 100; 10 stay in memory
    source = tmp_path / "packets.bin"
    source.write_bytes(b"".join(len(p).to_bytes(2, "big") + p for p in packets))
    path = tmp_path / "killed.opus"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), str(source)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "the writer process did not flush within 20 s"
        assert process.stdout.readline().strip() == "flushed"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert_holds_the_tone(path, packets=100)


def test_flushed_file_decodes_while_the_writer_is_still_open(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    path = tmp_path / "open.opus"
    writer = write_file(path, tone_packets[:60], flush_every=25)
    try:
        assert len(decode(path)) == 50 * FRAME
    finally:
        writer.close()
    assert len(decode(path)) == 60 * FRAME


BAD_PACKETS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff" * 2000, id="garbage-code3-63-frames"),
    pytest.param(b"\x03", id="code3-without-count"),
    pytest.param(b"\xfb\x00", id="code3-zero-frames"),
    pytest.param(b"\xfb\x07", id="code3-over-120ms"),
    pytest.param(b"\xf9abc", id="code1-odd-length"),
    pytest.param(b"\xfa\xfc", id="code2-truncated-length"),
    pytest.param(b"\xfa\x10ab", id="code2-first-frame-too-long"),
    pytest.param(b"\xf8" + bytes(1276), id="frame-over-1275-bytes"),
    pytest.param(b"\xfb\x41\xff", id="padding-runs-off-the-end"),
]


@pytest.mark.parametrize("bad", BAD_PACKETS)
def test_bad_packets_are_skipped(tmp_path: Path, tone_packets: list[bytes], bad: bytes) -> None:
    assert opus_packet_samples(bad) == 0
    path = tmp_path / "a.opus"
    with closing(OggOpusWriter(path, serial=1)) as writer:
        for index, payload in enumerate(tone_packets[:100], start=1):
            writer.add_packet(payload, index * FRAME)
            writer.add_packet(bad, index * FRAME)
            if index % 30 == 0:
                writer.flush()
    assert_holds_the_tone(path, packets=100)


def test_gaps_become_concealment_and_overlaps_are_skipped(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    path = tmp_path / "gaps.opus"
    with closing(OggOpusWriter(path, serial=2)) as writer:
        for index, payload in enumerate(tone_packets[:150], start=1):
            if 40 <= index < 47 or 90 <= index < 140:  # 140 ms, then a whole second lost
                continue
            writer.add_packet(payload, index * FRAME)
            if index == 60:
                writer.add_packet(tone_packets[10], 55 * FRAME)  # late duplicate: skipped
        writer.add_packet(tone_packets[150], 151 * FRAME + 300)  # gap 300 -> 240 of PLC
        assert writer.granule == 151 * FRAME + 240
    samples = decode(path)
    assert len(samples) == 151 * FRAME + 240

    # The tone after the long gap starts where its granule positions put it.
    def level(first: int, last: int) -> float:
        return float(np.sqrt(np.mean(samples[first * FRAME : last * FRAME] ** 2)))

    # Packets 90-139 are lost: concealment fades to silence, and the tone resumes
    # exactly at packet 140 (decoded samples from 139 * FRAME on).
    assert level(91, 139) < 1e-3
    assert level(139, 141) > 0.005
    assert level(145, 150) == pytest.approx(level(60, 88), rel=0.2)


def test_stream_may_start_at_an_offset(tmp_path: Path, tone_packets: list[bytes]) -> None:
    path = tmp_path / "offset.opus"
    with closing(OggOpusWriter(path, serial=3)) as writer:
        for index, payload in enumerate(tone_packets[:50], start=1):
            writer.add_packet(payload, 10 * FRAME + index * FRAME)
    pages = read_pages(path.read_bytes())
    assert pages[2].granule == 60 * FRAME
    assert len(decode(path)) == 50 * FRAME


def test_packet_larger_than_a_page_continues_on_the_next(
    tmp_path: Path, tone_packets: list[bytes]
) -> None:
    # A legal packet of ~70 kB: one 20 ms frame with code 3 padding (RFC 6716 §3.2.5).
    frame = tone_packets[5]
    assert frame[0] & 0x03 == 0
    padding = 70_000
    padded = (
        bytes(((frame[0] & 0xFC) | 0x03, 0x41))
        + b"\xff" * (padding // 254)
        + bytes((padding % 254,))
        + frame[1:]
        + bytes(padding)
    )
    assert opus_packet_samples(padded) == FRAME
    path = tmp_path / "big.opus"
    with closing(OggOpusWriter(path, serial=4)) as writer:
        for index, payload in enumerate(tone_packets[:20], start=1):
            writer.add_packet(padded if index == 10 else payload, index * FRAME)
    pages = read_pages(path.read_bytes())
    continued = [page for page in pages if page.header_type & 0x01]
    assert continued
    assert all(page.segments <= 255 for page in pages)
    assert len(decode(path)) == 20 * FRAME


def test_exclusive_create_and_use_after_close(tmp_path: Path) -> None:
    path = tmp_path / "a.opus"
    writer = OggOpusWriter(path, serial=5)
    writer.close()
    size = path.stat().st_size
    with pytest.raises(FileExistsError):
        OggOpusWriter(path, serial=5)
    writer.add_packet(b"\xf8", FRAME)
    assert writer.flush() == 0
    writer.close()
    assert path.stat().st_size == size
    with pytest.raises(ValueError, match="comment"):
        OggOpusWriter(tmp_path / "b.opus", serial=6, comments={"BAD=KEY": "x"})


def test_add_packet_is_cheap(tmp_path: Path, tone_packets: list[bytes]) -> None:
    with closing(OggOpusWriter(tmp_path / "a.opus", serial=8)) as writer:
        started = time.perf_counter()
        for index, payload in enumerate(tone_packets, start=1):
            writer.add_packet(payload, index * FRAME)
        per_packet = (time.perf_counter() - started) / len(tone_packets)
    assert per_packet < 200e-6


def _code3(toc: int, count_byte: int, rest: bytes = b"") -> bytes:
    return bytes((toc | 0x03, count_byte)) + rest


@pytest.mark.parametrize(
    ("payload", "samples"),
    [
        (b"\x00", 480),  # SILK NB 10 ms, code 0, empty frame (DTX)
        (b"\x08" + bytes(40), 960),  # SILK NB 20 ms
        (b"\x10" + bytes(40), 1920),  # SILK NB 40 ms
        (b"\x18" + bytes(40), 2880),  # SILK NB 60 ms
        (b"\x58" + bytes(40), 2880),  # SILK WB 60 ms
        (b"\x60" + bytes(40), 480),  # Hybrid SWB 10 ms
        (b"\x78" + bytes(40), 960),  # Hybrid FB 20 ms
        (b"\x80" + bytes(10), 120),  # CELT NB 2.5 ms
        (b"\x88" + bytes(10), 240),  # CELT NB 5 ms
        (b"\x90" + bytes(10), 480),  # CELT NB 10 ms
        (b"\xf8" + bytes(100), 960),  # CELT FB 20 ms
        (b"\xfc" + bytes(100), 960),  # stereo flag does not change the duration
        (b"\xf9" + bytes(100), 1920),  # code 1: two equal frames
        (b"\xf9" + bytes(99), 0),  # code 1 needs an even length
        (b"\xfa\x01ab", 1920),  # code 2: 1-byte length
        (b"\xfa\xfc\x01" + bytes(300), 1920),  # code 2: 2-byte length (256)
        (b"\xfa", 0),
        (_code3(0xF8, 0x03), 2880),  # code 3, CBR, 3 empty frames
        (_code3(0xF8, 0x06, bytes(60)), 5760),  # 6 x 20 ms = 120 ms
        (_code3(0xF8, 0x07), 0),  # 140 ms is too long
        (_code3(0x18, 0x02), 5760),  # 2 x 60 ms
        (_code3(0x18, 0x03), 0),
        (_code3(0xE0, 0x30), 5760),  # 48 x 2.5 ms
        (_code3(0xF8, 0x03, bytes(4)), 0),  # CBR: 4 bytes do not split into 3 frames
        (_code3(0xF8, 0x41, b"\x02xx"), 960),  # padding of 2 bytes
        (_code3(0xF8, 0x41, b"\x03xx"), 0),  # padding longer than the packet
        (_code3(0xF8, 0x82, b"\x01ab"), 1920),  # VBR: first frame 1 byte, second 1 byte
        (_code3(0xF8, 0x82, b"\x05a"), 0),  # VBR: first frame runs off the end
        (_code3(0xF8, 0x00), 0),
        (b"\xfb", 0),
        (b"", 0),
    ],
)
def test_opus_packet_samples(payload: bytes, samples: int) -> None:
    assert opus_packet_samples(payload) == samples


def test_opus_packet_samples_of_real_packets(tone_packets: list[bytes]) -> None:
    assert {opus_packet_samples(p) for p in tone_packets} == {FRAME}


def test_ogg_crc_matches_the_bitwise_definition() -> None:
    """RFC 3533's CRC computed bit by bit, against the zlib-based one."""

    def bitwise(data: bytes) -> int:
        crc = 0
        for byte in data:
            crc ^= byte << 24
            for _ in range(8):
                crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
                crc &= 0xFFFFFFFF
        return crc

    rng = random.Random(5)
    for size in (0, 1, 3, 27, 282, 4096):
        data = bytes(rng.randrange(256) for _ in range(size))
        assert ogg.crc32(data) == bitwise(data), size
    assert ogg.crc32(b"OggS") == bitwise(b"OggS") != 0
