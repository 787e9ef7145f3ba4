"""libopus' own decoder, through ctypes: decoding, packet-loss concealment and in-band FEC.

FFmpeg's native `opus` decoder (what `av.open` and the `amovie` filter pick) renders a
lost frame as digital silence: it runs no concealment and cannot read the low-bit-rate
redundancy (LBRR, "in-band FEC") that a packet may carry for the one before it. PyAV's
`libopus` decoder conceals but never asks for FEC (FFmpeg always passes
`decode_fec=0`). So the stems are decoded here with libopus itself: the copy inside
PyAV's wheel (`av.libs/`, libopus 1.5 or later), which is already loaded into any
process that imports `av`, so this adds no dependency; a system libopus of 1.5 or
later serves where PyAV was built against one.

Only what decoding a mono voice needs is bound: :class:`OpusDecoder` with
:meth:`~OpusDecoder.decode`, :meth:`~OpusDecoder.conceal` (libopus' PLC, `data=NULL`)
and :meth:`~OpusDecoder.recover` (`decode_fec=1`), and :func:`has_lbrr`. Every call
releases the GIL (ctypes does), so seats decode in parallel threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from pathlib import Path
from typing import Final

import av
import numpy as np

__all__ = ["MAX_FRAME_SAMPLES", "OpusDecoder", "OpusError", "has_lbrr", "version"]

SAMPLE_RATE: Final = 48_000
MAX_FRAME_SAMPLES: Final = 5760
"""120 ms: the most one call can return (RFC 6716 §3.2.5); longer concealment is split."""
PLC_UNIT: Final = 120
"""2.5 ms: concealment is asked for in whole multiples of the shortest Opus frame."""
_OPUS_OK: Final = 0
_OPUS_RESET_STATE: Final = 4028


class OpusError(RuntimeError):
    """libopus refused a call, or could not be loaded."""


def _candidates() -> list[str]:
    """PyAV's own copy first (the version its wheel pins), then the system's."""
    wheel = Path(av.__file__).resolve().parent.parent / "av.libs"
    found = sorted(str(p) for p in wheel.glob("libopus*.so*"))
    system = ctypes.util.find_library("opus")
    return found + ([system] if system else [])


@cache
def _library() -> ctypes.CDLL:
    """libopus, with the prototypes used here; raises :class:`OpusError` if no copy
    has them all (`opus_packet_has_lbrr` needs libopus 1.5)."""
    tried: list[str] = []
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError as error:
            tried.append(f"{name}: {error}")
            continue
        if not hasattr(lib, "opus_packet_has_lbrr"):
            tried.append(f"{name}: older than libopus 1.5 (no opus_packet_has_lbrr)")
            continue
        return _declare(lib)
    raise OpusError("no usable libopus found (" + "; ".join(tried or ["none installed"]) + ")")


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    c_int, c_int32, c_void_p, c_char_p = (
        ctypes.c_int,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_char_p,
    )
    float_p = ctypes.POINTER(ctypes.c_float)
    lib.opus_decoder_create.argtypes = [c_int32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode_float.argtypes = [c_void_p, c_char_p, c_int32, float_p, c_int, c_int]
    lib.opus_decode_float.restype = c_int
    lib.opus_decoder_ctl.argtypes = [c_void_p, c_int]
    lib.opus_decoder_ctl.restype = c_int
    lib.opus_packet_has_lbrr.argtypes = [c_char_p, c_int32]
    lib.opus_packet_has_lbrr.restype = c_int
    lib.opus_packet_get_samples_per_frame.argtypes = [c_char_p, c_int32]
    lib.opus_packet_get_samples_per_frame.restype = c_int
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_strerror.restype = c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_get_version_string.restype = c_char_p
    return lib


def version() -> str:
    """The loaded libopus' version string, e.g. ``libopus 1.6.1``."""
    return str(_library().opus_get_version_string().decode())


def has_lbrr(payload: bytes) -> bool:
    """Whether the packet carries LBRR data (in-band FEC) for the frame before it.

    Only SILK and hybrid packets can; a CELT-only packet never does. A malformed
    packet has none."""
    return bool(payload) and _library().opus_packet_has_lbrr(payload, len(payload)) > 0


def frame_samples(payload: bytes) -> int:
    """Samples at 48 kHz of each frame in the packet (0 for an empty packet)."""
    if not payload:
        return 0
    return max(0, _library().opus_packet_get_samples_per_frame(payload, SAMPLE_RATE))


class OpusDecoder:
    """One mono libopus decoder at 48 kHz (a stereo stream is downmixed by libopus).

    Owner: whoever decodes one stream with it, on one thread at a time. Every method
    returns a new float32 array."""

    def __init__(self) -> None:
        self._lib = _library()
        error = ctypes.c_int(0)
        state = self._lib.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(error))
        if not state or error.value != _OPUS_OK:
            raise OpusError(f"opus_decoder_create: {self._message(error.value)}")
        self._state: int | None = state
        self._out = np.zeros(MAX_FRAME_SAMPLES, np.float32)
        self._out_p = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def close(self) -> None:
        state, self._state = self._state, None
        if state:
            self._lib.opus_decoder_destroy(state)

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> OpusDecoder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def decode(self, payload: bytes) -> np.ndarray:
        """The packet's samples; raises :class:`OpusError` if libopus refuses it."""
        return self._call(payload, MAX_FRAME_SAMPLES, 0)

    def recover(self, following: bytes, samples: int) -> np.ndarray:
        """`samples` lost just before the packet `following`: all but the last frame
        concealed, that one rebuilt from `following`'s LBRR data if it has any (libopus
        conceals it otherwise). `samples` is a multiple of 2.5 ms and at least one
        frame of `following`."""
        frame = frame_samples(following)
        concealed = self.conceal(samples - frame)
        return np.concatenate((concealed, self._call(following, frame, 1)))

    def conceal(self, samples: int) -> np.ndarray:
        """`samples` (a multiple of 2.5 ms) of packet-loss concealment, as many calls as
        it takes: the decoder continues the voice from what it last decoded and fades
        it as the loss goes on."""
        pieces = []
        while samples > 0:
            take = min(samples, MAX_FRAME_SAMPLES)
            pieces.append(self._call(None, take, 0))
            samples -= take
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def reset(self) -> None:
        """Forget the stream so far (a new stream follows)."""
        if self._state:
            self._lib.opus_decoder_ctl(self._state, _OPUS_RESET_STATE)

    def _call(self, payload: bytes | None, samples: int, fec: int) -> np.ndarray:
        if not self._state:
            raise OpusError("the decoder is closed")
        if not 0 < samples <= MAX_FRAME_SAMPLES:  # the output buffer's size
            raise OpusError(f"cannot decode {samples} samples in one call")
        size = len(payload) if payload is not None else 0
        got = self._lib.opus_decode_float(self._state, payload, size, self._out_p, samples, fec)
        if got < 0:
            raise OpusError(self._message(got))
        return self._out[:got].copy()

    def _message(self, code: int) -> str:
        return str(self._lib.opus_strerror(code).decode())
