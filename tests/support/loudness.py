"""Loudness measured by something other than storyroom's own code: FFmpeg's `ebur128`
filter, through PyAV."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

RATE = 48_000


def ebur128(path: Path) -> dict[str, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) of a file by FFmpeg's ebur128."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
    graph = av.filter.Graph()
    source = graph.add_abuffer(
        sample_rate=RATE, format="fltp", layout="stereo", time_base=fractions.Fraction(1, RATE)
    )
    meter = graph.add("ebur128", "metadata=1:peak=true")
    sink = graph.add("abuffersink")
    source.link_to(meter)
    meter.link_to(sink)
    graph.configure()
    values: dict[str, str] = {}

    def drain() -> None:
        while True:
            try:
                values.update(sink.pull().metadata)
            except (av.BlockingIOError, av.EOFError):
                return

    pts = 0
    with av.open(str(path)) as container:
        for decoded in container.decode(audio=0):
            for frame in resampler.resample(decoded):
                frame.pts = pts
                pts += frame.samples
                source.push(frame)
                drain()
    source.push(None)
    drain()
    return {
        "integrated": float(values["lavfi.r128.I"]),
        "true_peak": 20 * np.log10(float(values["lavfi.r128.true_peak"])),
    }
