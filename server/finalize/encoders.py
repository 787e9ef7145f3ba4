"""The encoders: 24-bit PCM for the master, FLAC for the stems, LAME for the MP3.

LAME is called directly (:class:`Lame`), a second of audio at a time without the GIL,
and its frames are muxed by FFmpeg's MP3 muxer on another thread
(:class:`Mp3Writer`); together they write exactly what FFmpeg's own `libmp3lame`
encoder would at the same settings. Where LAME's library cannot be loaded directly,
that encoder itself makes the frames (:class:`PyAvMp3`; see
:mod:`~storyroom.finalize.mp3_encoder`).
"""

from __future__ import annotations

import ctypes
import functools
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import av
import numpy as np
from av.packet import PacketSideData, packet_sidedata_type_from_literal

from storyroom.finalize import mp3_encoder
from storyroom.finalize.contracts import FinalizeError
from storyroom.finalize.loudness import TIME_BASE
from storyroom.finalize.mp3_encoder import Mp3Encoder
from storyroom.finalize.plan import BLOCK
from storyroom.recording.timeline import SAMPLE_RATE

if TYPE_CHECKING:
    from av.container.core import Chapter as Id3Chapter

FULL_SCALE: Final = 1 << 23  # 24-bit
MP3_BIT_RATE: Final = 128_000
MP3_QUALITY: Final = "5"  # LAME -q 5: good quality, twice as fast as the default


def to_int24(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples * FULL_SCALE), -FULL_SCALE, FULL_SCALE - 1).astype(np.int32)


def pcm24(planar: np.ndarray) -> bytes:
    """(2, n) float → interleaved little-endian 24-bit PCM bytes."""
    ints = np.ascontiguousarray(to_int24(planar).T, dtype="<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


class FlacStem:
    """A mono 24-bit FLAC file written block by block (STREAMINFO completed on close)."""

    def __init__(self, path: Path, tags: dict[str, str]) -> None:
        self.container: Any = av.open(str(path), "w", format="flac")
        self.container.metadata.update(tags)
        self.stream: Any = self.container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        self.stream.codec_context.format = "s32"
        self.stream.codec_context.options = {"bits_per_raw_sample": "24"}
        self.pts = 0

    def write(self, samples: np.ndarray, gain: float = 1.0) -> None:
        """float samples (n,) on the ±1 scale; FLAC's s32 takes 24-bit values left-aligned."""
        if not len(samples):
            return
        ints = to_int24(samples * gain if gain != 1.0 else samples) << 8
        frame = av.AudioFrame.from_ndarray(ints.reshape(1, -1), format="s32", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.pts
        self.pts += len(samples)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def _mp3_settings(codec_context: Any) -> None:
    codec_context.bit_rate = MP3_BIT_RATE
    codec_context.format = "fltp"
    codec_context.options = {"compression_level": MP3_QUALITY}


def _lame_library() -> ctypes.CDLL:
    """The LAME that FFmpeg's own `libmp3lame` encoder uses (`mp3_encoder.lame_library_path`)."""
    name = mp3_encoder.lame_library_path()
    if name is None:
        raise FinalizeError("the MP3 encoder (LAME) is not installed")
    library = ctypes.CDLL(name)
    library.lame_init.restype = ctypes.c_void_p
    library.lame_close.argtypes = [ctypes.c_void_p]
    library.lame_init_params.argtypes = [ctypes.c_void_p]
    library.lame_encode_buffer_float.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    library.lame_encode_flush.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return library


# MPEG audio layer III frame sizes: bit rates (kbit/s) by version and index, sample rates
_MP3_BIT_RATES: Final = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2
    0: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2.5
}
_MP3_SAMPLE_RATES: Final = {
    3: (44100, 48000, 32000),
    2: (22050, 24000, 16000),
    0: (11025, 12000, 8000),
}


def _mp3_frame_size(header: bytes | bytearray) -> int:
    """Bytes in the layer III frame that `header` (4 bytes) begins."""
    version, index, rate = (header[1] >> 3) & 3, header[2] >> 4, (header[2] >> 2) & 3
    if (
        header[0] != 0xFF
        or header[1] & 0xE6 != 0xE2
        or version == 1
        or index in (0, 15)
        or rate == 3
    ):
        raise FinalizeError("the MP3 encoder produced an invalid frame")
    per_frame = 144 if version == 3 else 72
    return per_frame * _MP3_BIT_RATES[version][index] * 1000 // _MP3_SAMPLE_RATES[version][rate] + (
        (header[2] >> 1) & 1
    )


class FrameEncoder(Protocol):
    """What makes the access copy's MP3 frames for :class:`Mp3Writer`."""

    @property
    def name(self) -> Mp3Encoder: ...

    samples: int
    """Samples given to the encoder so far."""
    initial_padding: int
    """Samples of encoder delay before the first input sample (the decoder skips them)."""

    def encode(self, planar: np.ndarray | None) -> list[bytes]:
        """(2, n) float samples on the ±1 scale (None: flush); the complete frames."""

    def close(self) -> None: ...


def new_mp3_encoder() -> FrameEncoder:
    """LAME called directly when its library loads, else FFmpeg's `libmp3lame` through
    PyAV; `FinalizeError` when there is neither."""
    chosen = mp3_encoder.available()
    if chosen is Mp3Encoder.LAME:
        return Lame()
    if chosen is Mp3Encoder.PYAV:
        return PyAvMp3()
    raise FinalizeError(mp3_encoder.describe(None))


class Lame:
    """LAME called directly, one call per block, with the settings FFmpeg's `libmp3lame`
    encoder gives it for `_mp3_settings` (joint stereo, CBR, `-q`, bit reservoir, no
    Xing frame: the muxer writes that): the same bytes as encoding through PyAV.

    Why not through PyAV: its encoder takes the GIL back after every 1152-sample frame
    (~0.6 ms of work), and beside the other stages' Python code it waited for the GIL
    longer than it worked. Here a whole one-second block is encoded without the GIL
    (ctypes releases it), so the encoder keeps its core to itself."""

    FRAME: Final = 1152
    DELAY_PADDING: Final = 528 + 1  # what FFmpeg adds to LAME's delay (the decoder's)
    name: Final = Mp3Encoder.LAME

    def __init__(self) -> None:
        self.library = _lame_library()
        handle = self.library.lame_init()
        if not handle:
            raise FinalizeError("the MP3 encoder could not start")
        self.handle = ctypes.c_void_p(handle)
        settings = (
            ("lame_set_num_channels", 2),
            ("lame_set_mode", 1),  # JOINT_STEREO
            ("lame_set_in_samplerate", SAMPLE_RATE),
            ("lame_set_out_samplerate", SAMPLE_RATE),
            ("lame_set_quality", int(MP3_QUALITY)),
            ("lame_set_brate", MP3_BIT_RATE // 1000),
            ("lame_set_bWriteVbrTag", 0),
            ("lame_set_disable_reservoir", 0),
        )
        for setter, value in settings:
            function = getattr(self.library, setter)
            function.argtypes = [ctypes.c_void_p, ctypes.c_int]
            if function(self.handle, value) < 0:
                raise FinalizeError(f"the MP3 encoder refused {setter}")
        if self.library.lame_init_params(self.handle) < 0:
            self.close()
            raise FinalizeError("the MP3 encoder refused its settings")
        self.library.lame_get_encoder_delay.argtypes = [ctypes.c_void_p]
        self.initial_padding = self.library.lame_get_encoder_delay(self.handle) + self.DELAY_PADDING
        self.samples = 0  # given to the encoder so far
        self.pending = bytearray()
        self.output = ctypes.create_string_buffer(BLOCK * 5 // 4 + 7200)  # LAME's worst case

    def encode(self, planar: np.ndarray | None) -> list[bytes]:
        """(2, n) float samples on the ±1 scale (None: flush); the complete frames."""
        if planar is None:
            written = self.library.lame_encode_flush(self.handle, self.output, len(self.output))
        else:
            self.samples += planar.shape[1]
            scaled = np.ascontiguousarray(planar * np.float32(32768), dtype=np.float32)
            for start in range(0, scaled.shape[1], BLOCK):
                part = np.ascontiguousarray(scaled[:, start : start + BLOCK])
                written = self.library.lame_encode_buffer_float(
                    self.handle,
                    part[0].ctypes.data,
                    part[1].ctypes.data,
                    part.shape[1],
                    self.output,
                    len(self.output),
                )
                if written < 0:
                    raise FinalizeError(f"the MP3 encoder failed ({written})")
                self.pending += ctypes.string_at(self.output, written)
            written = 0
        if written < 0:
            raise FinalizeError(f"the MP3 encoder failed ({written})")
        self.pending += ctypes.string_at(self.output, written)
        frames = []
        while len(self.pending) >= 4:
            size = _mp3_frame_size(self.pending[:4])
            if len(self.pending) < size:
                break
            frames.append(bytes(self.pending[:size]))
            del self.pending[:size]
        return frames

    def close(self) -> None:
        if self.handle:
            self.library.lame_close(self.handle)
            self.handle = ctypes.c_void_p()


def _pyav_mp3_context() -> Any:
    context: Any = av.CodecContext.create("libmp3lame", "w")
    context.sample_rate = SAMPLE_RATE
    context.layout = "stereo"
    _mp3_settings(context)
    return context


@functools.cache
def _pyav_initial_padding() -> int:
    """The delay FFmpeg's `libmp3lame` puts before the first sample (it does not show
    it): its first packet's time stamp, negated, from a frame of silence."""
    context = _pyav_mp3_context()
    frame = av.AudioFrame.from_ndarray(
        np.zeros((2, Lame.FRAME), dtype=np.float32), format="fltp", layout="stereo"
    )
    frame.sample_rate, frame.pts = SAMPLE_RATE, 0
    packets = [*context.encode(frame), *context.encode(None)]
    return -int(packets[0].pts)


class PyAvMp3:
    """FFmpeg's `libmp3lame` encoder through PyAV at :class:`Lame`'s settings: the same
    frames, for :class:`Mp3Writer` to mux the same way. The fallback when LAME's library
    cannot be loaded directly; slower, as it takes the GIL back after every frame."""

    name: Final = Mp3Encoder.PYAV

    def __init__(self) -> None:
        self.initial_padding = _pyav_initial_padding()
        self.context: Any = _pyav_mp3_context()
        self.samples = 0

    def encode(self, planar: np.ndarray | None) -> list[bytes]:
        if planar is None:
            return [bytes(packet) for packet in self.context.encode(None)]
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(planar, dtype=np.float32), format="fltp", layout="stereo"
        )
        frame.sample_rate, frame.pts = SAMPLE_RATE, self.samples
        self.samples += planar.shape[1]
        return [bytes(packet) for packet in self.context.encode(frame)]

    def close(self) -> None:
        self.context = None


def _skip_samples(packet: av.Packet, start: int, end: int) -> None:
    """FFmpeg's gapless side data: samples to skip at the start and end of the stream."""
    kind = packet_sidedata_type_from_literal("skip_samples")
    side = PacketSideData(kind, 10)  # type: ignore[call-arg]  # the stub omits the C constructor
    memoryview(side)[:] = struct.pack("<II2x", start, end)
    side.to_packet(packet)


class Mp3Writer:
    """The access copy: stereo MP3 with ID3v2.4 tags and CHAP/CTOC chapters.

    Takes the frames :class:`Lame` made; FFmpeg's MP3 muxer writes the ID3 tag and the
    Xing/LAME header (with the encoder delay and end padding, for gapless players).
    Kept apart from the encoder so that the muxing (which takes the GIL back for every
    frame) can run on another thread than the encoding."""

    def __init__(
        self, path: Path, tags: dict[str, str], chapters: list[Id3Chapter], initial_padding: int
    ) -> None:
        self.container: Any = av.open(str(path), "w", format="mp3")
        self.container.metadata.update(tags)
        if chapters:
            self.container.set_chapters(chapters)
        # the stream's parameters for the muxer; its own encoder is opened but not fed
        self.stream: Any = self.container.add_stream(
            "libmp3lame", rate=SAMPLE_RATE, layout="stereo"
        )
        _mp3_settings(self.stream.codec_context)
        self.initial_padding = initial_padding
        self.pts = -initial_padding  # of the next frame

    def write(self, frames: list[bytes], samples: int, end: bool) -> None:
        """Mux `frames`; `samples`: how many the encoder had been given when it made
        them; `end`: these are the last."""
        for number, data in enumerate(frames):
            packet = av.Packet(data)
            packet.stream = self.stream
            packet.time_base = TIME_BASE
            packet.pts = packet.dts = self.pts
            duration = max(0, min(Lame.FRAME, samples - self.pts))
            packet.duration = duration
            first = self.pts == -self.initial_padding
            last = end and number == len(frames) - 1
            if first or last:
                _skip_samples(
                    packet,
                    self.initial_padding if first else 0,
                    Lame.FRAME - duration if last else 0,
                )
            self.pts += Lame.FRAME
            self.container.mux_one(packet)

    def close(self) -> None:
        self.container.close()
