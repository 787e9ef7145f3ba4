"""Finalization, checked from the outside.

The recordings are written by the recorder's own classes (`finalize_helpers`: real Opus
packets, RTP timestamps, jitter, flushes), then finalized; every check reads the
outputs back with something other than storyroom's code: a small RIFF reader for the
Broadcast WAV chunks, the FLAC STREAMINFO bytes, an ID3v2 frame reader for the MP3
chapters, FFmpeg's `ebur128` filter (through PyAV) for loudness and true peak,
hashlib for the manifest, and narrow-band envelopes to find where sounds landed.
"""

from __future__ import annotations

import fractions
import hashlib
import json
import os
import shutil
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from storyroom.finalize import encoders
from storyroom.finalize.contracts import Chapter, Finalized, FinalizeError
from storyroom.finalize.run import finalize_recording
from storyroom.recording.timeline import read_segment, scan_segment
from storyroom.status import RecordingState
from support.loudness import ebur128
from support.recordings import (
    RATE,
    Connection,
    Recording,
    SeatScript,
    finalize_input,
    make_recording,
    mixed,
    tone,
)

OPUS_DELAY = 312 / RATE  # libopus look-ahead: the decoded sound lags the captured one
FRAME_TOLERANCE = 0.020  # one 20 ms Opus frame
DELAY = {"a": 0.003, "b": 0.009, "facilitator": 0.005}  # smallest one-way network delays
CUES = [
    {"seq": 1, "question_id": "q-hope", "text": "¿Qué te trajo aquí hoy?", "rec_time": 0.5},
    {"seq": 2, "question_id": "q-home", "text": "What does home mean to you?", "rec_time": 8.0},
    {"seq": 3, "question_id": "q-change", "text": "What changed your mind?", "rec_time": 16.25},
    {"seq": 4, "question_id": "q-hear", "text": "What do you want me to hear?", "rec_time": 24.0},
]
MARKERS = [{"seq": 1, "label": "laughter", "rec_time": 12.0}]
PAUSE_AT = 6.0


# -- independent readers ------------------------------------------------------------------


def riff_chunks(path: Path) -> list[tuple[str, bytes]]:
    """Top-level chunks of a RIFF/WAVE file; LIST chunks as 'LIST/<type>'."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    chunks = []
    at = 12
    while at < len(data):
        ident = data[at : at + 4].decode("ascii")
        (size,) = struct.unpack("<I", data[at + 4 : at + 8])
        body = data[at + 8 : at + 8 + size]
        assert len(body) == size, f"chunk {ident} runs past the end"
        if ident == "LIST":
            ident, body = f"LIST/{body[:4].decode('ascii')}", body[4:]
        chunks.append((ident, body))
        at += 8 + size + size % 2
    return chunks


def sub_chunks(body: bytes) -> list[tuple[str, bytes]]:
    out = []
    at = 0
    while at < len(body):
        ident = body[at : at + 4].decode("ascii")
        (size,) = struct.unpack("<I", body[at + 4 : at + 8])
        out.append((ident, body[at + 8 : at + 8 + size]))
        at += 8 + size + size % 2
    return out


@dataclass
class Wave:
    fmt: tuple[int, int, int, int, int, int]
    bext: dict[str, Any]
    info: dict[str, str]
    cues: list[tuple[int, str]]
    pcm: np.ndarray  # (frames, channels) floats in [-1, 1)


def read_wave(path: Path) -> Wave:
    chunks = dict(riff_chunks(path))
    fmt = struct.unpack("<HHIIHH", chunks["fmt "][:16])
    raw = chunks["bext"]
    text = lambda a, b: raw[a:b].rstrip(b"\0").decode("ascii")  # noqa: E731
    bext = {
        "description": text(0, 256),
        "originator": text(256, 288),
        "originator_reference": text(288, 320),
        "origination_date": text(320, 330),
        "origination_time": text(330, 338),
        "time_reference": struct.unpack("<Q", raw[338:346])[0],
        "version": struct.unpack("<H", raw[346:348])[0],
        "loudness_value": struct.unpack("<h", raw[412:414])[0],
        "coding_history": raw[602:].rstrip(b"\0").decode("ascii"),
    }
    info = {k: v.rstrip(b"\0").decode("utf-8") for k, v in sub_chunks(chunks["LIST/INFO"])}
    cue = chunks.get("cue ", b"\0\0\0\0")
    (count,) = struct.unpack("<I", cue[:4])
    points = {}
    for n in range(count):
        ident, position, fcc, _, _, offset = struct.unpack(
            "<II4sIII", cue[4 + 24 * n : 28 + 24 * n]
        )
        assert fcc == b"data" and position == offset
        points[ident] = offset
    labels = {}
    for ident, body in sub_chunks(chunks.get("LIST/adtl", b"")):
        assert ident == "labl"
        labels[struct.unpack("<I", body[:4])[0]] = body[4:].rstrip(b"\0").decode("utf-8")
    assert set(labels) == set(points)
    cues = sorted((points[i], labels[i]) for i in points)
    data = np.frombuffer(chunks["data"], np.uint8).reshape(-1, 3)
    ints = (
        data[:, 0].astype(np.int32)
        | (data[:, 1].astype(np.int32) << 8)
        | (data[:, 2].astype(np.int8).astype(np.int32) << 16)
    )
    pcm = (ints / 2**23).reshape(-1, fmt[1])
    return Wave(fmt, bext, info, cues, pcm)


def flac_streaminfo(path: Path) -> dict[str, int]:
    data = path.read_bytes()[:42]
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # first block: STREAMINFO
    info = int.from_bytes(data[18:26], "big")
    return {
        "rate": info >> 44,
        "channels": ((info >> 41) & 0x7) + 1,
        "bits": ((info >> 36) & 0x1F) + 1,
        "samples": info & 0xFFFFFFFFF,
    }


def decode(path: Path) -> np.ndarray:
    """(channels, samples) floats, by PyAV/FFmpeg."""
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            array = frame.to_ndarray()
            if frame.format.name == "s32":
                array = array.astype(np.float64) / 2**31
            if not frame.format.is_planar:
                array = array.reshape(-1, frame.layout.nb_channels).T
            chunks.append(array)
    return np.concatenate(chunks, axis=1)


def id3_frames(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    assert data[:3] == b"ID3" and data[3] == 4, "ID3v2.4 tag first"

    def synchsafe(raw: bytes) -> int:
        return (raw[0] << 21) | (raw[1] << 14) | (raw[2] << 7) | raw[3]

    end = 10 + synchsafe(data[6:10])
    frames = []
    at = 10
    while at + 10 <= end and data[at] != 0:
        ident = data[at : at + 4].decode("ascii")
        size = synchsafe(data[at + 4 : at + 8])
        frames.append((ident, data[at + 10 : at + 10 + size]))
        at += 10 + size
    return frames


def id3_chapters(path: Path) -> tuple[list[str], list[tuple[int, int, str]]]:
    """(CTOC children, [(start ms, end ms, TIT2 title)]) of an MP3's ID3v2.4 tag."""
    toc: list[str] = []
    chapters = []
    for ident, body in id3_frames(path):
        if ident == "CTOC":
            _, _, rest = body.partition(b"\0")
            count = rest[1]
            toc = [c.decode() for c in rest[2:].split(b"\0")[:count]]
        elif ident == "CHAP":
            _, _, rest = body.partition(b"\0")
            start, end = struct.unpack(">II", rest[:8])
            title = ""
            sub = rest[16:]
            while len(sub) >= 10:
                sub_id = sub[:4].decode("ascii")
                size = int.from_bytes(sub[4:8], "big")
                if sub_id == "TIT2":
                    encoding, text = sub[10], sub[11 : 10 + size]
                    assert encoding == 3  # UTF-8
                    title = text.rstrip(b"\0").decode("utf-8")
                sub = sub[10 + size :]
            chapters.append((start, end, title))
    return toc, chapters


def envelope(
    signal: np.ndarray, freq: float, start: float, end: float
) -> tuple[np.ndarray, np.ndarray]:
    """Level of the `freq` component over [start, end) s: (times, amplitude) in 1 ms
    steps. The signal is shifted down by `freq` and averaged over a symmetric 20 ms
    triangle (two 10 ms boxcars): tones 200 Hz apart stay apart, and the half-level
    point of an onset stays where the onset is."""
    a, b = max(0, int(start * RATE)), min(len(signal), int(end * RATE))
    n = np.arange(a, b)
    level: np.ndarray = signal[a:b] * np.exp(-2j * np.pi * freq * n / RATE)
    for _ in range(2):
        sums = np.concatenate(([0], np.cumsum(level)))
        level = np.concatenate((np.zeros(240), (sums[480:] - sums[:-480]) / 480, np.zeros(239)))
    return n[::48] / RATE, 2 * np.abs(level[::48])


def onset(signal: np.ndarray, freq: float, after: float, before: float) -> float:
    """When the `freq` component first reaches half its level in [after, before)."""
    times, level = envelope(signal, freq, after, before)
    steady = np.percentile(level, 95)
    assert steady > 0.02, f"no {freq} Hz sound between {after} and {before} s"
    return float(times[np.argmax(level > steady / 2)])


def level_between(signal: np.ndarray, freq: float, start: float, end: float) -> float:
    _, level = envelope(signal, freq, start, end)
    return float(level[5:-5].max())


# -- the conversation: 30 s, three seats, every kind of event --------------------------------


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recording, Finalized]:
    """a: 440 Hz, 3 s of packets lost at 9-12 s; b: 660 Hz, reconnects (gap 14-17 s),
    then its sender goes quiet for 6 s (22.5-28.5 s); facilitator: 880 Hz; a and b
    both burst (2 and 2.5 kHz) at 20 s; the recording is paused at 6 s for 3 s."""
    path = tmp_path_factory.mktemp("conversation") / "rec_0123456789abcdef"
    burst_a = tone(2000, 0.5, 20.0, 20.15)
    burst_b = tone(2500, 0.5, 20.0, 20.15)
    recording = make_recording(
        path,
        [
            SeatScript(
                "a",
                [Connection(0.5, 30.0, lost=[(9.0, 12.0)])],
                signal=mixed(tone(440, 0.25, 1.0), burst_a),
                delay=DELAY["a"],
            ),
            SeatScript(
                "b",
                [Connection(0.5, 14.0), Connection(17.0, 30.0, quiet=[(22.5, 28.5)])],
                signal=mixed(tone(660, 0.25), burst_b),
                delay=DELAY["b"],
            ),
            SeatScript(
                "facilitator",
                [Connection(0.3, 30.0)],
                signal=tone(880, 0.2),
                delay=DELAY["facilitator"],
            ),
        ],
        30.0,
        pauses=[(PAUSE_AT, 3.0)],
    )
    # the server also lists the pause and resume as plain markers: the finalizer keeps
    # its own pause marker (which knows how long the pause was) instead
    server_markers = [
        *MARKERS,
        {"seq": 0, "label": "pause", "rec_time": PAUSE_AT},
        {"seq": 0, "label": "resume", "rec_time": PAUSE_AT + 0.004},
    ]
    spec = finalize_input(recording, cues=CUES, markers=server_markers)
    result = finalize_recording(path, spec, path.parent / "progress.json")
    return recording, result


def test_returns_every_file_with_its_size_and_hash(
    conversation: tuple[Recording, Finalized],
) -> None:
    recording, result = conversation
    root = recording.path
    kinds = {f.name: f.kind for f in result.files}
    assert {name: kind for name, kind in kinds.items() if kind != "source"} == {
        "master.wav": "master",
        "stems/a.flac": "stem",
        "stems/b.flac": "stem",
        "stems/facilitator.flac": "stem",
        "access.mp3": "access",
        "chapters.vtt": "chapters",
        "chapters.json": "chapters",
        "waveform.svg": "waveform",
        "waveform.json": "waveform",
        "metadata.json": "metadata",
        "manifest-sha256.txt": "manifest",
    }
    assert {name for name, kind in kinds.items() if kind == "source"} == {
        "recording.jsonl",
        *(f"stems/{p.name}" for p in (root / "stems").iterdir() if p.suffix != ".flac"),
    }
    for entry in result.files:
        data = (root / entry.name).read_bytes()
        assert entry.bytes == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert result.duration_s == 30.0
    assert not list(root.rglob("*.part"))


def test_the_result_survives_the_database_as_json(
    conversation: tuple[Recording, Finalized],
) -> None:
    """`recordings.finalized` holds the result's JSON; read back, it is the same result."""
    _, result = conversation
    stored = json.dumps(result.to_json())
    assert Finalized.from_json(json.loads(stored)).to_json() == json.loads(stored)
    assert set(json.loads(stored)) == {"duration_s", "files", "chapters", "loudness", "damaged"}


def test_manifest_verifies_with_hashlib(conversation: tuple[Recording, Finalized]) -> None:
    recording, _ = conversation
    root = recording.path
    lines = (root / "manifest-sha256.txt").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {"manifest-sha256.txt"}


def test_master_is_a_24_bit_broadcast_wave_with_bext_and_info(
    conversation: tuple[Recording, Finalized],
) -> None:
    recording, _ = conversation
    wave = read_wave(recording.path / "master.wav")
    format_tag, channels, rate, byte_rate, block_align, bits = wave.fmt
    assert (format_tag, channels, rate, bits) == (1, 2, 48_000, 24)
    assert (byte_rate, block_align) == (48_000 * 6, 6)
    assert len(wave.pcm) == 30 * RATE
    bext = wave.bext
    assert bext["version"] == 2
    assert bext["originator"] == "storyroom"
    assert bext["originator_reference"] == "rec_0123456789abcdef"
    assert bext["description"].startswith("Una conversacion: neighbours")  # ASCII only
    # 1_795_292_634 = 2026-11-21 20:23:54 UTC
    assert (bext["origination_date"], bext["origination_time"]) == ("2026-11-21", "20:23:54")
    assert bext["time_reference"] == (20 * 3600 + 23 * 60 + 54) * RATE
    assert "A=PCM,F=48000,W=24,M=stereo" in bext["coding_history"]
    assert bext["coding_history"].endswith("\r\n")
    assert -4000 < bext["loudness_value"] < -500  # LUFS x 100, filled in
    assert wave.info["INAM"] == "Una conversación: neighbours"
    assert wave.info["ICRD"] == "2026-11-21"
    assert wave.info["ISFT"] == "storyroom 0.1.0"
    assert "rec_0123456789abcdef" in wave.info["ICMT"]


def test_cue_points_label_every_question_marker_and_pause(
    conversation: tuple[Recording, Finalized],
) -> None:
    recording, _ = conversation
    wave = read_wave(recording.path / "master.wav")
    expected = sorted(
        [(round(c["rec_time"] * RATE), c["text"]) for c in CUES]
        + [(round(m["rec_time"] * RATE), m["label"]) for m in MARKERS]
        + [(round(PAUSE_AT * RATE), "Paused 3 s")]
    )
    assert wave.cues == expected


def test_stems_are_24_bit_mono_flac_as_long_as_the_master(
    conversation: tuple[Recording, Finalized],
) -> None:
    recording, _ = conversation
    frames = len(read_wave(recording.path / "master.wav").pcm)
    for seat in ("a", "b", "facilitator"):
        path = recording.path / "stems" / f"{seat}.flac"
        assert flac_streaminfo(path) == {
            "rate": 48_000,
            "channels": 1,
            "bits": 24,
            "samples": frames,
        }
        assert decode(path).shape == (1, frames)


def test_gaps_land_where_they_should(conversation: tuple[Recording, Finalized]) -> None:
    """Lost packets (PLC-filled), a reconnect and a sender's silence: each 3-6 s gap
    starts and ends at the right time, in the stem and in the master."""
    recording, _ = conversation
    stems = {s: decode(recording.path / "stems" / f"{s}.flac")[0] for s in ("a", "b")}
    master = read_wave(recording.path / "master.wav").pcm
    late = {seat: DELAY[seat] + OPUS_DELAY for seat in DELAY}
    cases = [  # (seat, frequency, silent from, sound again at)
        ("a", 440, 9.0, 12.0),  # 150 packets lost in transit
        ("b", 660, 14.0, 17.0),  # b reconnected: a new segment
        ("b", 660, 22.5, 28.5),  # b's sender sent nothing: an RTP timestamp jump
    ]
    for seat, freq, silent, back in cases:
        for name, audio in (("stem", stems[seat]), ("master", master[:, 0])):
            assert onset(audio, freq, back - 0.5, back + 0.5) == pytest.approx(
                back + late[seat], abs=FRAME_TOLERANCE
            ), (seat, name, back)
            # sound right up to the gap, then (after any concealment fades) silence
            assert level_between(audio, freq, silent - 0.3, silent - 0.05) > 0.1
            assert level_between(audio, freq, silent + 0.3, back - 0.05) < 0.02, (seat, name)


def test_simultaneous_bursts_stay_together(conversation: tuple[Recording, Finalized]) -> None:
    recording, _ = conversation
    a = decode(recording.path / "stems" / "a.flac")[0]
    b = decode(recording.path / "stems" / "b.flac")[0]
    master = read_wave(recording.path / "master.wav").pcm
    in_stems = onset(a, 2000, 19.5, 20.5), onset(b, 2500, 19.5, 20.5)
    in_master = onset(master[:, 0], 2000, 19.5, 20.5), onset(master[:, 1], 2500, 19.5, 20.5)
    for first, second in (in_stems, in_master):
        assert abs(first - second) < FRAME_TOLERANCE
        assert first == pytest.approx(20.0 + DELAY["a"] + OPUS_DELAY, abs=FRAME_TOLERANCE)
    assert in_stems == pytest.approx(in_master, abs=0.002)


def test_pause_is_cut_from_the_clock_without_a_hole(
    conversation: tuple[Recording, Finalized],
) -> None:
    recording, _ = conversation
    facilitator = decode(recording.path / "stems" / "facilitator.flac")[0]
    around = facilitator[int((PAUSE_AT - 0.3) * RATE) : int((PAUSE_AT + 0.3) * RATE)]
    rms = np.sqrt(np.mean(around.reshape(-1, 120) ** 2, axis=1))  # per 2.5 ms
    assert rms.min() > 0.1  # the voice runs straight on across the pause point (0.14 RMS)
    markers = json.loads((recording.path / "metadata.json").read_text())["markers"]
    assert {"kind": "pause", "rec_time": PAUSE_AT} == {
        k: v for k, v in markers[0].items() if k in ("kind", "rec_time")
    }


def test_master_is_the_panned_sum_of_the_stems(conversation: tuple[Recording, Finalized]) -> None:
    """No dynamic processing: the master is the stems, panned, times one constant."""
    recording, _ = conversation
    master = read_wave(recording.path / "master.wav").pcm.T
    stems = {
        s: decode(recording.path / "stems" / f"{s}.flac")[0] for s in ("a", "b", "facilitator")
    }
    metadata = json.loads((recording.path / "metadata.json").read_text())
    mix = np.zeros_like(master)
    for seat, stem in stems.items():
        pan = metadata["stems"][seat]["pan"]
        angle = (pan + 1) * np.pi / 4
        stem_gain = 10 ** (metadata["stems"][seat]["gain_db"] / 20)
        mix[0] += np.cos(angle) * stem / stem_gain
        mix[1] += np.sin(angle) * stem / stem_gain
    gain = float(np.vdot(master, mix) / np.vdot(mix, mix))  # the one constant
    assert 20 * np.log10(gain) == pytest.approx(
        metadata["loudness"]["master"]["gain_db"], abs=0.001
    )
    assert np.abs(master - gain * mix).max() < 4 / 2**23
    assert np.abs(master).max() < 1.0
    left, right = np.cos(0.7 * np.pi / 4), np.sin(0.7 * np.pi / 4)
    assert left > right  # a is left of centre (and b, mirrored, right)


def test_access_copy_is_loudness_normalised(conversation: tuple[Recording, Finalized]) -> None:
    recording, result = conversation
    measured = ebur128(recording.path / "access.mp3")
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)
    assert measured["true_peak"] <= -1.0
    reported = result.loudness.access
    assert reported.integrated_lufs == pytest.approx(measured["integrated"], abs=0.2)
    assert reported.true_peak_dbtp == pytest.approx(measured["true_peak"], abs=0.3)
    master = ebur128(recording.path / "master.wav")
    assert result.loudness.master.integrated_lufs == pytest.approx(master["integrated"], abs=0.2)


def test_chapters_everywhere_equal_the_cue_times(conversation: tuple[Recording, Finalized]) -> None:
    recording, result = conversation
    cue_times = [c["rec_time"] for c in CUES]
    titles = [c["text"] for c in CUES]
    podcast = json.loads((recording.path / "chapters.json").read_text())
    assert podcast["version"] == "1.2.0"
    assert [c["title"] for c in podcast["chapters"]] == titles
    assert [c["startTime"] for c in podcast["chapters"]] == pytest.approx(
        cue_times, abs=FRAME_TOLERANCE
    )
    vtt = (recording.path / "chapters.vtt").read_text().split("\n\n")
    assert vtt[0] == "WEBVTT"

    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(rest)

    cues = [block.splitlines() for block in vtt[1:] if block.strip()]
    starts = [seconds(lines[1].split(" --> ")[0]) for lines in cues]
    ends = [seconds(lines[1].split(" --> ")[1]) for lines in cues]
    assert starts == pytest.approx(cue_times, abs=FRAME_TOLERANCE)
    assert ends == pytest.approx([*cue_times[1:], 30.0], abs=FRAME_TOLERANCE)
    assert [lines[2] for lines in cues] == titles
    toc, chapters = id3_chapters(recording.path / "access.mp3")
    assert len(toc) == len(chapters) == len(CUES)
    assert [c[0] / 1000 for c in chapters] == pytest.approx(cue_times, abs=FRAME_TOLERANCE)
    assert [c[2] for c in chapters] == titles
    assert result.chapters == tuple(
        Chapter(t, title) for t, title in zip(cue_times, titles, strict=True)
    )


def test_metadata_names_seats_consent_cues_and_damage(
    conversation: tuple[Recording, Finalized],
) -> None:
    recording, result = conversation
    metadata = json.loads((recording.path / "metadata.json").read_text())
    assert metadata["seats"] == {
        "a": {"name": "Ana"},
        "b": {"name": "Ben"},
        "facilitator": {"name": "Fay"},
    }
    assert metadata["consent"]["b"] == {"record": True, "archive": True, "public": True}
    assert (metadata["session_id"], metadata["recording_id"]) == (
        "ses_0123456789abcdef",
        "rec_0123456789abcdef",
    )
    assert (metadata["language"], metadata["take"], metadata["status"]) == ("es", 1, "stopped")
    assert metadata["software"] == "storyroom 0.1.0"
    assert metadata["duration_s"] == 30.0
    assert [c["question_id"] for c in metadata["cues"]] == [c["question_id"] for c in CUES]
    assert any(m["label"] == "laughter" and m["rec_time"] == 12.0 for m in metadata["markers"])
    assert metadata["damaged"] == result.to_json()["damaged"]

    def covers(seat: str, kind: str, start: float, end: float) -> bool:
        return any(
            d["seat"] == seat
            and d["kind"] == kind
            and d["start_s"] <= start + 0.1
            and d["end_s"] >= end - 0.1
            for d in metadata["damaged"]
        )

    assert covers("a", "packet_loss", 9.0, 12.0)
    assert covers("b", "no_audio", 14.1, 16.9)
    assert covers("b", "no_audio", 22.6, 28.4)
    names = {f["name"] for f in metadata["files"]}
    assert {"master.wav", "access.mp3", "stems/a.flac", "recording.jsonl"} <= names
    for key in ("master", "access"):
        assert metadata["loudness"][key]["integrated_lufs"] is not None


def test_waveform_marks_every_cue(conversation: tuple[Recording, Finalized]) -> None:
    recording, _ = conversation
    svg = ET.parse(recording.path / "waveform.svg").getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    titles = [t.text or "" for t in svg.findall(".//svg:g/svg:title", ns)]
    assert len(titles) == len(CUES)
    assert all(c["text"] in title for c, title in zip(CUES, titles, strict=True))
    assert svg.find("svg:polygon", ns) is not None


def test_progress_ends_at_100(conversation: tuple[Recording, Finalized]) -> None:
    recording, _ = conversation
    progress = json.loads((recording.path.parent / "progress.json").read_text())
    assert progress == {"percent": 100, "stage": "done"}


def test_scan_segment_finds_the_same_runs_as_read_segment(
    conversation: tuple[Recording, Finalized],
) -> None:
    recording, _ = conversation
    logs = sorted((recording.path / "stems").glob("*.timing.jsonl"))
    assert len(logs) == 4
    for log in logs:
        full, scanned = read_segment(log), scan_segment(log)
        assert scanned.runs == full.runs and len(full.runs) >= 1
        assert scanned.events == full.events
        assert scanned.packets == []


# -- loud voices: a gain only where needed ----------------------------------------------------


def test_a_gain_only_where_the_mix_or_a_voice_would_clip(tmp_path: Path) -> None:
    """a's square-ish wave decodes past full scale; a and b together would clip."""

    def hot(t: np.ndarray) -> np.ndarray:
        return np.clip(1.6 * np.sin(2 * np.pi * 300 * t), -1, 1)

    recording = make_recording(
        tmp_path / "rec",
        [
            SeatScript("a", [Connection(0.2, 6.0)], signal=hot),
            SeatScript("b", [Connection(0.2, 6.0)], signal=tone(500, 0.7)),
        ],
        6.0,
    )
    result = finalize_recording(
        recording.path, finalize_input(recording, seats={"a": "Ana", "b": "Ben"})
    )
    metadata = json.loads((recording.path / "metadata.json").read_text())
    assert set(metadata["stems"]) == {"a", "b"}
    assert metadata["stems"]["a"]["gain_db"] < 0 < metadata["stems"]["a"]["peak_dbfs"]
    assert metadata["stems"]["b"]["gain_db"] == 0
    assert result.loudness.master.gain_db < 0
    a = decode(recording.path / "stems" / "a.flac")[0]
    master = read_wave(recording.path / "master.wav").pcm
    for audio in (a, master):
        peak = np.abs(audio).max()
        assert 0.99 < peak < 1.0
        assert np.sum(np.abs(audio) >= peak - 2 / 2**23) <= 2  # a peak, not a plateau


# -- damaged input -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """10 s, a (440 Hz from 0.5 s) and b (660 Hz); copied and damaged per case."""
    path = tmp_path_factory.mktemp("healthy") / "rec"
    return make_recording(
        path,
        [
            SeatScript("a", [Connection(0.3, 10.0)], signal=tone(440, 0.3, 0.5)),
            SeatScript("b", [Connection(0.3, 10.0)], signal=tone(660, 0.3)),
        ],
        10.0,
    )


def _truncate_mid_page(stems: Path) -> None:
    opus = stems / "a-01.opus"
    data = opus.read_bytes()
    opus.write_bytes(data[: data.rfind(b"OggS", 0, int(len(data) * 0.7)) + 700])


def _corrupt_a_page(stems: Path) -> None:
    opus = stems / "a-01.opus"
    data = bytearray(opus.read_bytes())
    page = data.find(b"OggS", len(data) // 2)
    data[page + 200 : page + 216] = bytes(b ^ 0x5A for b in data[page + 200 : page + 216])
    opus.write_bytes(bytes(data))


def _headers_only(stems: Path) -> None:
    opus = stems / "a-01.opus"
    data = opus.read_bytes()
    third = data.find(b"OggS", data.find(b"OggS", 4) + 4)
    opus.write_bytes(data[:third])


def _tear_last_timing_line(stems: Path) -> None:
    with open(stems / "a-01.timing.jsonl", "a") as f:
        f.write("[99999, 12345678, 1795292644.5, 10.4")


DAMAGE = {
    # case: (what is done, damage kind named for seat a, a's tone still found at)
    "stem cut off mid-page": (_truncate_mid_page, "truncated", 2.0),
    "corrupt page": (_corrupt_a_page, "corrupt", 9.0),
    "empty segment file": (lambda s: (s / "a-01.opus").write_bytes(b""), "empty_stem", None),
    "headers only": (_headers_only, "empty_stem", None),
    "not Ogg at all": (
        lambda s: (s / "a-01.opus").write_bytes(os.urandom(5000)),
        "unreadable",
        None,
    ),
    "torn last timing line": (_tear_last_timing_line, "timing_lines", 5.0),
    "timing log without its stem": (lambda s: (s / "a-01.opus").unlink(), "missing_stem", None),
    "stem without its timing log": (
        lambda s: (s / "a-01.timing.jsonl").unlink(),
        "missing_timing",
        5.0,
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_input_still_finalizes_and_says_what_was_lost(
    healthy: Recording, tmp_path: Path, case: str
) -> None:
    damage, kind, tone_at = DAMAGE[case]
    path = tmp_path / "rec"
    shutil.copytree(healthy.path, path)
    damage(path / "stems")
    status = RecordingState.INTERRUPTED if kind == "truncated" else RecordingState.STOPPED
    duration = None if kind == "truncated" else 10.0
    spec = finalize_input(healthy, status=status, duration_s=duration)
    result = finalize_recording(path, spec)
    metadata = json.loads((path / "metadata.json").read_text())
    named = [d for d in metadata["damaged"] if d["seat"] == "a" and d["kind"] == kind]
    assert named, metadata["damaged"]
    assert all(d["source"].startswith("stems/a-01") for d in named)
    assert not [d for d in metadata["damaged"] if d["seat"] == "b" and d["kind"] != "packet_loss"]
    assert result.to_json()["damaged"] == metadata["damaged"]
    master = read_wave(path / "master.wav").pcm
    assert len(master) == pytest.approx(10 * RATE, abs=0.1 * RATE)  # without a duration:
    b = decode(path / "stems" / "b.flac")[0]
    assert level_between(b, 660, 1.0, 9.5) > 0.2  # b untouched
    a = decode(path / "stems" / "a.flac")[0]
    if tone_at is None:
        assert np.abs(a).max() == 0
    else:
        assert level_between(a, 440, tone_at - 0.3, tone_at + 0.3) > 0.2
    if kind == "truncated":
        (cut,) = named
        assert 3.0 < cut["start_s"] < cut["end_s"] == pytest.approx(10.0, abs=0.1)
        assert level_between(a, 440, cut["start_s"] + 0.3, 9.9) < 0.02
    if kind == "corrupt":
        (hole,) = named
        assert 0.1 < hole["end_s"] - hole["start_s"] < 1.5
    if kind == "missing_timing":  # placed by its open time: near, not exact
        assert onset(a, 440, 0.2, 1.0) == pytest.approx(0.5 + OPUS_DELAY, abs=0.04)


def test_an_interrupted_take_finalizes_from_what_reached_the_disk(tmp_path: Path) -> None:
    recording = make_recording(
        tmp_path / "rec",
        [
            SeatScript("a", [Connection(0.3, 10.0)], signal=tone(440, 0.3)),
            SeatScript("b", [Connection(0.3, 10.0)], signal=tone(660, 0.3)),
        ],
        10.0,
        crash_at=6.2,
    )
    assert '"stop"' not in (recording.path / "recording.jsonl").read_text()
    result = finalize_recording(
        recording.path,
        finalize_input(recording, status=RecordingState.INTERRUPTED, duration_s=None),
    )
    assert 5.5 < result.duration_s < 6.3
    a = decode(recording.path / "stems" / "a.flac")[0]
    assert level_between(a, 440, 1.0, 5.0) > 0.2


def test_nothing_decodable_raises_and_leaves_nothing_behind(
    healthy: Recording, tmp_path: Path
) -> None:
    path = tmp_path / "rec"
    shutil.copytree(healthy.path, path)
    for stem in (path / "stems").glob("*.opus"):
        stem.write_bytes(b"")
    before = sorted(p.name for p in path.rglob("*"))
    with pytest.raises(FinalizeError, match="could be decoded"):
        finalize_recording(path, finalize_input(healthy))
    assert sorted(p.name for p in path.rglob("*")) == before
    shutil.rmtree(path / "stems")
    with pytest.raises(FinalizeError, match="no recorded audio"):
        finalize_recording(path, finalize_input(healthy))


def test_finalizing_again_replaces_the_outputs(healthy: Recording, tmp_path: Path) -> None:
    path = tmp_path / "rec"
    shutil.copytree(healthy.path, path)
    first = finalize_recording(path, finalize_input(healthy, title="First title"))
    second = finalize_recording(path, finalize_input(healthy, title="Second title"))
    assert read_wave(path / "master.wav").info["INAM"] == "Second title"
    assert {f.name for f in first.files} == {f.name for f in second.files}
    for line in (path / "manifest-sha256.txt").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest


def test_access_encoder_makes_what_ffmpegs_libmp3lame_makes(tmp_path: Path) -> None:
    """The access copy's LAME, called directly, writes the same bytes as FFmpeg's
    `libmp3lame` encoder at the same settings, and a decoder gets back exactly as many
    samples as went in (encoder delay and end padding are in the LAME header)."""
    samples = 3 * RATE + 1234  # not a whole number of MP3 frames
    t = np.arange(samples) / RATE
    left = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(5).standard_normal(
        samples
    )
    planar = np.stack([left, 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    chapters: list[Any] = [
        {
            "id": 0,
            "start": 0,
            "end": 3000,
            "time_base": fractions.Fraction(1, 1000),
            "metadata": {"title": "One"},
        }
    ]
    ours = tmp_path / "ours.mp3"
    lame = encoders.Lame()
    writer = encoders.Mp3Writer(ours, {"title": "T"}, chapters, lame.initial_padding)
    for start in range(0, samples, RATE):
        writer.write(lame.encode(planar[:, start : start + RATE]), lame.samples, end=False)
    writer.write(lame.encode(None), lame.samples, end=True)
    writer.close()
    lame.close()

    reference = tmp_path / "ffmpeg.mp3"
    with av.open(str(reference), "w", format="mp3") as container:
        container.metadata.update({"title": "T"})
        container.set_chapters(chapters)
        stream: Any = container.add_stream("libmp3lame", rate=RATE, layout="stereo")
        stream.codec_context.bit_rate = 128_000
        stream.codec_context.format = "fltp"
        stream.codec_context.options = {"compression_level": "5"}
        for start in range(0, samples, RATE):
            part = np.ascontiguousarray(planar[:, start : start + RATE])
            frame = av.AudioFrame.from_ndarray(part, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = RATE, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    assert ours.read_bytes() == reference.read_bytes()
    with av.open(str(ours)) as container:
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert decoded.shape == (2, samples)
    assert np.corrcoef(decoded[1], planar[1])[0, 1] > 0.99  # aligned: the delay was trimmed
