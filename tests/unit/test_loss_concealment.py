"""Lost packets in the finalized stems: concealed by libopus, rebuilt from in-band FEC
where the next packet carries it, never a hole of digital silence while the voice is
there; outages stay silent and every lost packet is counted in `metadata.json`.

Recordings are written by the recorder's own classes (`support.recordings`: real
libopus packets, RTP timing, jitter) with packets dropped on the way in. The stems are
read back with FFmpeg's FLAC decoder and compared with the signal that was sent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from storyroom.finalize import decode as decode_stage
from storyroom.finalize import libopus
from storyroom.finalize.decode import OpusFrames
from storyroom.finalize.run import finalize_recording
from storyroom.recording.oggopus import OggOpusReader, OggOpusWriter, is_loss_filler
from support.recordings import (
    RATE,
    Connection,
    Recording,
    SeatScript,
    Signal,
    finalize_input,
    make_recording,
    speech_like,
    tone,
)

LOSS = 0.03
SECONDS = 20.0
START = 0.5
HOLE_MIN_S, HOLE_MAX_S = 0.005, 0.060  # the dropouts the issue measured: 20-40 ms
CORRELATION_MARGIN = 0.05
"""The stem at 3% loss may correlate with what was sent this much less than at 0%."""
ALIGNMENT_S = 0.020


def speech(seed: int) -> Signal:
    """Speech-like audio (voiced syllables in phrases, pauses between) for a take."""
    samples = speech_like(SECONDS + 1, seed, [(0.0, SECONDS + 1)])

    def signal(t: np.ndarray) -> np.ndarray:
        index = np.clip((t * RATE).astype(np.int64), 0, len(samples) - 1)
        return samples[index]

    return signal


def random_losses(rate: float, seed: int, start: float, end: float) -> list[tuple[float, float]]:
    """Single 20 ms packets dropped independently with probability `rate` (spans that
    hold exactly one packet's capture time)."""
    rng = random.Random(seed)
    frames = int((end - start) / 0.02)
    return [
        (start + i * 0.02 - 0.001, start + i * 0.02 + 0.001)
        for i in range(1, frames - 1)
        if rng.random() < rate
    ]


def read_flac(path: Path) -> np.ndarray:
    """A mono FLAC stem as floats, by FFmpeg."""
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return np.concatenate(chunks).astype(np.float64) / 2**31


def digital_silences(audio: np.ndarray, start: float, end: float) -> list[float]:
    """Lengths (s) of runs of exact zeros between `start` and `end` s."""
    part = audio[int(start * RATE) : int(end * RATE)]
    zero = np.concatenate(([False], part == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    return [(b - a) / RATE for a, b in zip(edges[::2], edges[1::2], strict=True)]


def best_lag(audio: np.ndarray, reference: np.ndarray, search: int = 2400) -> int:
    """The lag (samples) at which `audio` best matches `reference`: audio[n + lag] ~
    reference[n]."""
    n = len(reference)
    spectrum = np.fft.rfft(audio[: n + search], 2 * (n + search)) * np.conj(
        np.fft.rfft(reference, 2 * (n + search))
    )
    correlation = np.fft.irfft(spectrum)
    lags = np.concatenate((np.arange(0, search), np.arange(-search, 0)))
    values = np.concatenate((correlation[:search], correlation[-search:]))
    return int(lags[np.argmax(values)])


def correlation(audio: np.ndarray, sent: np.ndarray, start: float, end: float) -> float:
    """Pearson correlation of the stem with what was sent over [start, end), at the lag
    that aligns them best (network delay plus the codec's look-ahead)."""
    a, b = int(start * RATE), int(end * RATE)
    lag = best_lag(audio[a:], sent[a:b])
    return float(np.corrcoef(audio[a + lag : b + lag], sent[a:b])[0, 1])


def take(path: Path, losses: list[tuple[float, float]], seed: int = 4) -> Recording:
    return make_recording(
        path,
        [SeatScript("a", [Connection(START, SECONDS, lost=losses)], signal=speech(seed))],
        SECONDS,
    )


def sent(seed: int = 4) -> np.ndarray:
    return speech(seed)(np.arange(int(SECONDS * RATE)) / RATE)


# -- 3% random loss: the archive against what was sent ------------------------------------------


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recording, Recording]:
    """The same speech sent twice, at 0% and at 3% random loss, both finalized."""
    root = tmp_path_factory.mktemp("loss")
    clean = take(root / "clean", [])
    lossy = take(root / "lossy", random_losses(LOSS, 11, START, SECONDS))
    for recording in (clean, lossy):
        finalize_recording(recording.path, finalize_input(recording))
    return clean, lossy


def test_no_lost_packet_is_a_hole_of_digital_silence(lossy: tuple[Recording, Recording]) -> None:
    _, recording = lossy
    metadata = json.loads((recording.path / "metadata.json").read_text())
    counts = metadata["stems"]["a"]["packets_lost"]
    assert counts["lost"] >= 0.02 * (SECONDS - START) / 0.02  # the loss did happen
    stem = read_flac(recording.path / "stems" / "a.flac")
    holes = [s for s in digital_silences(stem, START + 0.1, SECONDS - 0.1) if s >= HOLE_MIN_S]
    assert not [s for s in holes if s <= HOLE_MAX_S], holes


def dropouts(audio: np.ndarray, places: list[int]) -> int:
    """How many of the 20 ms frames ending at `places` are 20 dB or more below both
    neighbouring frames while those are voiced."""

    def rms(start: int) -> float:
        return float(np.sqrt(np.mean(audio[start : start + 960] ** 2)))

    count = 0
    for end in places:
        around = min(rms(end - 1920), rms(end))
        if around > 1e-3 and rms(end - 960) < 0.1 * around:
            count += 1
    return count


def test_ffmpegs_decoder_would_have_left_the_holes(lossy: tuple[Recording, Recording]) -> None:
    """The cause, kept as a fact: FFmpeg's native Opus decoder (what finalization used)
    renders the very same stem's lost packets as dropouts (zeros, or near-silence after
    a hybrid frame); libopus does not."""
    _, recording = lossy
    stem = recording.path / "stems" / "a-01.opus"
    lost = [
        granule for payload, granule in OggOpusReader(stem).packets() if is_loss_filler(payload)
    ]
    with av.open(str(stem)) as container:
        native = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    ours = np.concatenate([pcm for _, pcm in OpusFrames(stem, len(native))])
    before, after = dropouts(native, lost), dropouts(ours, lost)
    print(f"dropouts at {len(lost)} lost packets: FFmpeg's decoder {before}, libopus {after}")
    assert len(lost) > 20
    assert before >= len(lost) // 2
    assert after <= len(lost) // 20


def test_the_stem_follows_what_was_sent_nearly_as_well_as_without_loss(
    lossy: tuple[Recording, Recording],
) -> None:
    clean, recording = lossy
    signal = sent()
    without = correlation(read_flac(clean.path / "stems" / "a.flac"), signal, 1.0, SECONDS - 1)
    with_loss = correlation(read_flac(recording.path / "stems" / "a.flac"), signal, 1.0, 19.0)
    assert without > 0.9
    assert with_loss >= without - CORRELATION_MARGIN, (with_loss, without)


def test_metadata_says_how_each_lost_packet_was_handled(
    lossy: tuple[Recording, Recording],
) -> None:
    _, recording = lossy
    metadata = json.loads((recording.path / "metadata.json").read_text())
    counts = metadata["stems"]["a"]["packets_lost"]
    logged = sum(
        json.loads(line)["lost"]
        for line in (recording.path / "stems" / "a-01.timing.jsonl").read_text().splitlines()
        if '"gap"' in line
    )
    assert counts["lost"] == logged
    assert counts["recovered_fec"] + counts["concealed_plc"] == counts["lost"]
    assert counts["silent_outage"] == 0
    # the sender's encoder had FEC on (as a browser's does once it hears of loss)
    assert counts["recovered_fec"] > counts["lost"] // 3
    assert 0.02 <= counts["longest_concealed_s"] <= 0.2
    losses = [d for d in metadata["damaged"] if d["kind"] == "packet_loss"]
    assert sum(int(d["reason"].split()[0]) for d in losses) == counts["lost"]
    assert all("recovered from in-band FEC" in d["reason"] or "PLC" in d["reason"] for d in losses)


# -- the recovery path itself ---------------------------------------------------------------------


def test_fec_rebuilds_a_lost_frame_better_than_concealment(
    lossy: tuple[Recording, Recording], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frames rebuilt from the next packet's LBRR data are closer to the frames the
    decoder would have produced had they arrived than libopus' concealment is."""
    clean, recording = lossy
    stem = recording.path / "stems" / "a-01.opus"
    end = max(granule for _, granule in OggOpusReader(stem).packets())
    reference = np.concatenate(
        [pcm for _, pcm in OpusFrames(clean.path / "stems" / "a-01.opus", end)]
    )
    recovered = OpusFrames(stem, end)
    with_fec = np.concatenate([pcm for _, pcm in recovered])
    monkeypatch.setattr(decode_stage, "has_lbrr", lambda payload: False)
    without_fec = np.concatenate([pcm for _, pcm in OpusFrames(stem, end)])
    # the same packets at the same granules in both stems (the losses aside)
    rebuilt = [g for g in recovered.gaps if g.fec]
    assert len(rebuilt) >= 5
    errors_fec, errors_plc = [], []
    for gap in rebuilt:
        frame = slice(gap.end - 960, gap.end)
        target = reference[frame]
        errors_fec.append(np.sum((with_fec[frame] - target) ** 2))
        errors_plc.append(np.sum((without_fec[frame] - target) ** 2))
    assert sum(errors_fec) < 0.5 * sum(errors_plc)


def test_has_lbrr_reads_what_the_encoder_was_asked_for() -> None:
    from support.recordings import encode_packets

    voice = speech_like(3.0, 2, [(0.0, 3.0)]).astype(np.float32)
    with_fec = encode_packets(voice)  # fec=1, packet_loss=5, as the seats' browsers
    assert sum(map(libopus.has_lbrr, with_fec)) > len(with_fec) // 2
    celt = bytes([(31 << 3), 0x55, 0xAA])  # a CELT-only packet can carry none
    assert not libopus.has_lbrr(celt)
    assert not libopus.has_lbrr(b"")


# -- bad input: nothing crashes, nothing moves -----------------------------------------------------

PAUSE_AT = 8.0


def _corrupt_after_gaps(path: Path) -> int:
    """Rewrite a stem with every packet that follows a loss garbled past its TOC byte
    (its LBRR data first of all); granules and fillers as before. Returns how many."""
    reader = OggOpusReader(path)
    packets = list(reader.packets())
    path.unlink()
    writer = OggOpusWriter(path, 1)
    corrupted, end = 0, 0
    for payload, granule in packets:
        if end and granule - end > 960 and len(payload) > 8:
            body = bytes(b ^ 0x5A for b in payload[1:9])
            payload = payload[:1] + body + payload[9:]
            corrupted += 1
        if not is_loss_filler(payload):  # the writer adds them again
            writer.add_packet(payload, granule)
            end = granule
    writer.close()
    return corrupted


Case = Callable[[Path], Recording]


def _segmented(
    path: Path, connections: list[Connection], pauses: list[tuple[float, float]]
) -> Recording:
    return make_recording(path, [SeatScript("a", connections, signal=speech(4))], SECONDS, pauses)


BAD_INPUT: dict[str, Case] = {
    "clean": lambda p: _segmented(p, [Connection(START, SECONDS)], []),
    "corrupt FEC data": lambda p: _segmented(
        p, [Connection(START, SECONDS, lost=random_losses(0.05, 3, START, SECONDS))], []
    ),
    "first packet lost": lambda p: _segmented(
        p, [Connection(START, SECONDS, lost=[(START - 0.001, START + 0.041)])], []
    ),
    "last packet lost": lambda p: _segmented(
        p, [Connection(START, SECONDS, lost=[(SECONDS - 0.041, SECONDS)])], []
    ),
    "loss right before a pause": lambda p: _segmented(
        p,
        [Connection(START, SECONDS, lost=[(PAUSE_AT - 0.06, PAUSE_AT + 0.01)])],
        [(PAUSE_AT, 2.0)],
    ),
    "loss right after a resume": lambda p: _segmented(
        p, [Connection(START, SECONDS, lost=[(PAUSE_AT, PAUSE_AT + 0.06)])], [(PAUSE_AT, 2.0)]
    ),
    "loss at a reconnect": lambda p: _segmented(
        p,
        [
            Connection(START, 8.0, lost=[(7.9, 8.0)]),
            Connection(9.0, SECONDS, lost=[(8.99, 9.05)]),
        ],
        [],
    ),
    "an outage": lambda p: _segmented(p, [Connection(START, SECONDS, lost=[(8.0, 9.5)])], []),
}


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Recording, dict]]:
    root = tmp_path_factory.mktemp("bad")
    done = {}
    for number, (name, make) in enumerate(BAD_INPUT.items()):
        recording = make(root / f"case{number}")
        if name == "corrupt FEC data":
            assert _corrupt_after_gaps(recording.path / "stems" / "a-01.opus") > 10
        result = finalize_recording(recording.path, finalize_input(recording))
        done[name] = (recording, result.to_json())
    return done


@pytest.mark.parametrize("name", [n for n in BAD_INPUT if n != "clean"])
def test_bad_input_neither_crashes_nor_moves_the_voice(
    name: str, bad_input: dict[str, tuple[Recording, dict]]
) -> None:
    reference = read_flac(bad_input["clean"][0].path / "stems" / "a.flac")
    recording, result = bad_input[name]
    stem = read_flac(recording.path / "stems" / "a.flac")
    assert len(stem) == len(reference)
    assert np.isfinite(stem).all()
    # in every second of voice away from the event, the voice sits where it should
    for second in (2.0, 5.0, 11.0, 15.0, 18.0):
        a, b = int(second * RATE), int((second + 0.8) * RATE)
        lag = best_lag(stem[a - 2400 : b + 2400], reference[a:b]) - 2400
        assert abs(lag) <= ALIGNMENT_S * RATE, (name, second, lag)
    holes = [
        s
        for s in digital_silences(stem, START + 0.1, SECONDS - 0.1)
        if HOLE_MIN_S <= s <= HOLE_MAX_S
    ]
    if name != "an outage":
        assert not holes, holes
    if name == "an outage":
        (outage,) = [d for d in result["damaged"] if "left silent" in d["reason"]]
        assert outage["kind"] == "packet_loss"
        # (merged with packets the jitter delayed past their turn, closer than 2 s)
        assert outage["start_s"] <= 8.05 and outage["end_s"] >= 9.45
        silent = stem[int(8.1 * RATE) : int(9.45 * RATE)]
        assert np.abs(silent).max() == 0
        fading = stem[int(7.95 * RATE) : int(8.1 * RATE)]
        assert np.abs(fading[-100:]).max() < np.abs(fading[:2000]).max()


def test_a_packet_libopus_refuses_is_concealed_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libopus decodes every packet whose framing is valid (the reader drops the rest),
    so its refusal is injected: every 100th packet."""
    recording = take(tmp_path / "rec", [])
    calls = 0

    class Refusing(libopus.OpusDecoder):
        def decode(self, payload: bytes) -> np.ndarray:
            nonlocal calls
            calls += 1
            if calls % 100 == 50:
                raise libopus.OpusError("corrupted stream")
            return super().decode(payload)

    monkeypatch.setattr(decode_stage, "OpusDecoder", Refusing)
    result = finalize_recording(recording.path, finalize_input(recording))
    (undecodable,) = [d for d in result.to_json()["damaged"] if d["kind"] == "undecodable"]
    assert "concealed" in undecodable["reason"]
    assert int(undecodable["reason"].split()[0]) == (calls + 50) // 100
    stem = read_flac(recording.path / "stems" / "a.flac")
    assert not [s for s in digital_silences(stem, START + 0.1, SECONDS - 0.1) if s >= HOLE_MIN_S]


def test_the_same_voice_decoder_serves_pass_two(tmp_path: Path) -> None:
    """A voice past full scale is decoded again in pass 2: the concealment is the same."""
    loud = tone(440, 1.4)
    recording = make_recording(
        tmp_path / "rec",
        [
            SeatScript(
                "a", [Connection(START, 6.0, lost=random_losses(0.05, 5, START, 6.0))], signal=loud
            )
        ],
        6.0,
    )
    finalize_recording(recording.path, finalize_input(recording))
    metadata = json.loads((recording.path / "metadata.json").read_text())
    assert metadata["stems"]["a"]["gain_db"] < 0  # it was rewritten in pass 2
    stem = read_flac(recording.path / "stems" / "a.flac")
    assert not [s for s in digital_silences(stem, START + 0.1, 5.9) if s >= HOLE_MIN_S]
