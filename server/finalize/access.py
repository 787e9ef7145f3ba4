"""The access copy: MP3 at -16 LUFS, true peak at most -1 dBTP, with chapters.

The MP3 encoder takes away a content-dependent 0-1 LU and its noise lifts the true
peak, so a constant gain and a limiter ceiling are first calibrated on a fixed-size
sample of the programme (:class:`Excerpts`, :func:`calibrate`). The copy is then made
(:class:`AccessCopy`: the limiter on the mixing thread, the encoder on a second, and
a third that muxes what it made and decodes it again to measure it); if the whole
still misses the target, :func:`correction` says how to make it once more.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import av
import numpy as np

from storyroom.finalize.contracts import AccessLoudness, FinalizeInput
from storyroom.finalize.encoders import Mp3Writer, new_mp3_encoder
from storyroom.finalize.loudness import LoudnessMeasurement, LoudnessMeter, TruePeakLimiter
from storyroom.finalize.mp3_encoder import Mp3Encoder
from storyroom.finalize.outputs import utc
from storyroom.finalize.pipeline import Stages, run_stages
from storyroom.finalize.plan import BLOCK
from storyroom.recording.timeline import SAMPLE_RATE

if TYPE_CHECKING:
    from av.container.core import Chapter as Id3Chapter

ACCESS_LUFS: Final = -16.0
ACCESS_LUFS_TOLERANCE: Final = 0.4  # re-encode beyond this (the promise is ±0.5 LU)
ACCESS_TRUE_PEAK: Final = -1.0  # dBTP, the promise
TRUE_PEAK_MARGIN: Final = 0.1  # re-encode if the measured peak comes closer than this
LIMITER_CEILING: Final = -2.5  # dBTP before MP3 encoding: room for the codec's overshoot
CALIBRATION_PEAK_MARGIN: Final = 0.5  # the sample's highest peak is not the programme's
CALIBRATION_STEP_DB: Final = 1.0
_LANGUAGES_639_2: Final = {"en": "eng", "es": "spa"}


class Excerpts:
    """A fixed-size sample of the programme: up to `count` half-second excerpts, one
    from a random place in each equal stretch of the recording (memory flat in
    duration; float16 is plenty to measure what the access chain does to them).
    Spread evenly but placed at random, it is unbiased even for periodic material;
    picking loud or speech-onset blocks is not."""

    def __init__(self, blocks: int, count: int = 128) -> None:
        count = max(1, min(count, max(48, blocks // 5), 2 * blocks))
        places = random.Random(blocks)  # the same sample for the same recording
        self.wanted: dict[int, list[int]] = {}
        for stretch in range(count):
            at = (stretch + places.random()) * blocks / count
            block = min(blocks - 1, int(at))
            self.wanted.setdefault(block, []).append(min(BLOCK // 2, int((at - block) * BLOCK)))
        self.chosen: list[np.ndarray] = []

    def add(self, index: int, planar: np.ndarray) -> None:
        for start in self.wanted.get(index, ()):
            excerpt = planar[:, start : start + BLOCK // 2]
            if excerpt.shape[1] > BLOCK // 8:
                self.chosen.append(excerpt.astype(np.float16))


def _chain(
    excerpts: list[np.ndarray], gain_db: float, ceiling_db: float
) -> tuple[float, float | None]:
    """What the limiter and the MP3 encoder do to the programme at this gain and
    ceiling, measured on the excerpts: (loudness change in LU, true peak in dBTP of
    the decoded MP3). The encoder's low-pass and quantization take a content-dependent
    0-1 LU that the constant gain must make up for, and its noise can lift the true
    peak by a dB or so over the limiter's ceiling."""
    if not excerpts:
        return 0.0, None
    gain = np.float32(10 ** (gain_db / 20))
    fade = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, 480))).astype(np.float32)
    before, after = LoudnessMeter(), LoudnessMeter(true_peak=True)
    limiter = TruePeakLimiter(ceiling_db)
    encoder = new_mp3_encoder()
    decoder: Any = av.CodecContext.create("mp3float", "r")

    def encode(planar: np.ndarray | None) -> None:
        for data in encoder.encode(planar):
            for frame in decoder.decode(av.Packet(data)):
                after.push_frame(frame)

    try:
        for excerpt in excerpts:
            x = excerpt.astype(np.float32) * gain
            if x.shape[1] > 2 * len(fade):  # fade each excerpt in and out: no clicks between
                x[:, : len(fade)] *= fade
                x[:, -len(fade) :] *= fade[::-1]
            before.push(x)
            limited = limiter.process(x)
            if limited is not None:
                encode(limited)
        last = limiter.flush()
        if last is not None:
            encode(last)
        encode(None)
    finally:
        encoder.close()
    for frame in decoder.decode(None):
        after.push_frame(frame)
    measured_before = before.finish().integrated_lufs
    measured_after = after.finish()
    loudness_after = measured_after.integrated_lufs
    if measured_before is None or loudness_after is None:
        return 0.0, measured_after.true_peak_dbtp
    return loudness_after - measured_before, measured_after.true_peak_dbtp


@dataclass(frozen=True, slots=True)
class Calibration:
    gain_db: float
    ceiling_db: float
    slope: float
    """How much the chain's loss changes per dB of gain (negative: more gain, more
    limiting)."""


def calibrate(excerpts: list[np.ndarray], mix_loudness: float | None) -> Calibration:
    """The access copy's constant gain and limiter ceiling (dB), and how much the
    chain's loss changes per dB of gain.

    The chain's loss grows with the gain (more limiting), so it is measured at two
    gains at once, on two threads (the encoder releases the GIL), and the gain that
    lands on the target is interpolated. The ceiling is lowered if the sample's encoded
    true peak comes within `CALIBRATION_PEAK_MARGIN` of the limit."""
    if mix_loudness is None:
        return Calibration(0.0, LIMITER_CEILING, 0.0)
    plain = ACCESS_LUFS - mix_loudness
    gains = (plain, plain + CALIBRATION_STEP_DB)
    results: list[tuple[float, float | None]] = [(0.0, None), (0.0, None)]
    stages = Stages()

    def measure(which: int) -> Callable[[], None]:
        def run() -> None:
            results[which] = _chain(excerpts, gains[which], LIMITER_CEILING)

        return run

    def start() -> None:
        for which in (0, 1):
            stages.start(f"calibrate-{which}", measure(which))

    run_stages(stages, start)
    (loss_low, peak_low), (loss_high, peak_high) = results
    slope = max(-0.9, min(0.0, (loss_high - loss_low) / CALIBRATION_STEP_DB))
    gain = plain - loss_low / (1 + slope)
    ceiling = LIMITER_CEILING
    if peak_low is not None and peak_high is not None:
        peak = peak_low + (peak_high - peak_low) * (gain - plain) / CALIBRATION_STEP_DB
        ceiling -= max(0.0, peak - (ACCESS_TRUE_PEAK - CALIBRATION_PEAK_MARGIN))
    return Calibration(min(max(gain, -40.0), 40.0), ceiling, slope)


@dataclass(frozen=True, slots=True)
class AccessResult:
    """How one access copy was made, and what it measured when decoded again."""

    gain_db: float
    ceiling_db: float
    measured: LoudnessMeasurement
    limited_s: float
    max_reduction_db: float
    encoder: str

    def loudness(self, encodes: int) -> AccessLoudness:
        """The figures `metadata.json` and the stored result give for the copy."""
        peak = self.measured.true_peak_dbtp
        return AccessLoudness(
            integrated_lufs=self.measured.integrated_lufs,
            true_peak_dbtp=None if peak is None else round(peak, 2),
            loudness_range_lu=self.measured.loudness_range_lu,
            target_lufs=ACCESS_LUFS,
            true_peak_limit_dbtp=ACCESS_TRUE_PEAK,
            gain_db=round(self.gain_db, 2),
            limiter_ceiling_dbtp=self.ceiling_db,
            limited_s=round(self.limited_s, 2),
            max_gain_reduction_db=round(self.max_reduction_db, 2),
            encodes=encodes,
            encoder=self.encoder,
        )


def correction(result: AccessResult, slope: float) -> tuple[float, float] | None:
    """None if the copy is on target; else the gain and ceiling (dB) to make it again
    with (rarely: the excerpts did not predict the whole well enough)."""
    measured_lufs = result.measured.integrated_lufs
    peak = result.measured.true_peak_dbtp
    off = 0.0 if measured_lufs is None else ACCESS_LUFS - measured_lufs
    over = 0.0 if peak is None else peak - (ACCESS_TRUE_PEAK - TRUE_PEAK_MARGIN)
    if abs(off) <= ACCESS_LUFS_TOLERANCE and over <= 0:
        return None
    return result.gain_db + off / (1 + slope), result.ceiling_db - (over + 0.2 if over > 0 else 0.0)


def access_tags(job: FinalizeInput) -> dict[str, str]:
    return {
        "title": job.title,
        "date": utc(job.started_at).strftime("%Y-%m-%d"),
        "language": _LANGUAGES_639_2.get(job.language, job.language),
        "comment": f"storyroom recording {job.recording_id} (access copy, {ACCESS_LUFS:g} LUFS)",
        "encoded_by": job.software,
    }


class AccessCopy:
    """One access copy being made within a pass: the caller's thread limits the mix it
    is given (:meth:`add`), an encoder thread and a muxing-and-measuring thread take it
    from there (started by :meth:`start`, inside the pass's :func:`run_stages` body)."""

    def __init__(
        self,
        stages: Stages,
        path: Path,
        job: FinalizeInput,
        chapters: list[Id3Chapter],
        gain_db: float,
        ceiling_db: float,
        size: int = 4,
    ) -> None:
        self.stages = stages
        self.path = path
        self.job = job
        self.chapters = chapters
        self.gain_db = gain_db
        self.ceiling_db = ceiling_db
        self.gain = np.float32(10 ** (gain_db / 20))
        self.limiter = TruePeakLimiter(ceiling_db)
        self.blocks = stages.channel(size)
        self.measured: LoudnessMeasurement | None = None
        self.encoder: Mp3Encoder | None = None

    def start(self) -> None:
        """Start the MP3 encoder thread and the thread that writes and measures what it made."""
        stages, blocks = self.stages, self.blocks
        packets = stages.channel(size=64)
        meter = LoudnessMeter(true_peak=True)
        lame = new_mp3_encoder()
        self.encoder = lame.name

        def encode() -> None:
            try:
                while (planar := blocks.get()) is not None:
                    packets.put((lame.encode(planar), lame.samples, False))
                packets.put((lame.encode(None), lame.samples, True))
            finally:
                lame.close()
                packets.put(None)

        def measure() -> None:
            # what the encoder made: muxed, then decoded a batch of frames at a time
            # (FFmpeg's decoder takes several MP3 frames in one packet: one trip through
            # Python per batch) and measured by the same ebur128 meter (4x-oversampled
            # true peak) as anyone's
            writer = Mp3Writer(
                self.path, access_tags(self.job), self.chapters, lame.initial_padding
            )
            decoder: Any = av.CodecContext.create("mp3float", "r")

            def take(frames: list[av.AudioFrame]) -> None:
                if frames:
                    meter.push(np.concatenate([frame.to_ndarray() for frame in frames], axis=1))

            try:
                while (batch := packets.get()) is not None:
                    frames, samples, end = batch
                    writer.write(frames, samples, end)
                    if frames:
                        take(decoder.decode(av.Packet(b"".join(frames))))
            finally:
                writer.close()
            take(decoder.decode(None))
            self.measured = meter.finish()

        stages.start("mp3", encode)
        stages.start("measure", measure)

    def add(self, mixed: np.ndarray) -> None:
        """The next block of the (unscaled) stereo mix."""
        limited = self.limiter.process(mixed * self.gain)
        if limited is not None:
            self.blocks.put(limited)

    def end(self) -> None:
        """The mix is complete: the limiter's last block, then the end of the stream."""
        last = self.limiter.flush()
        if last is not None:
            self.blocks.put(last)
        self.blocks.put(None)

    def result(self) -> AccessResult:
        """Once the pass's stages have been joined."""
        assert self.measured is not None and self.encoder is not None
        return AccessResult(
            self.gain_db,
            self.ceiling_db,
            self.measured,
            self.limiter.limited_samples / SAMPLE_RATE,
            self.limiter.max_reduction_db,
            self.encoder,
        )
