"""Which MP3 encoder makes the access copy, found without loading the audio stages (the
server asks at start-up and in `/readyz`; the worker process then encodes with it).

Normally LAME itself, called directly (:class:`storyroom.finalize.encoders.Lame`): the
copy bundled with PyAV's FFmpeg, else the system's `libmp3lame`. When neither can be
loaded (a PyAV built against another FFmpeg, a stripped image), FFmpeg's own
`libmp3lame` encoder through PyAV (:class:`storyroom.finalize.encoders.PyAvMp3`) makes
the same MP3 frames at the same settings, only more slowly: it takes the GIL back after
every 1152-sample frame. `metadata.json` says which one ran.
"""

from __future__ import annotations

import ctypes.util
import functools
from enum import StrEnum
from pathlib import Path

import av


class Mp3Encoder(StrEnum):
    """The encoder that made an access copy (`loudness.access.encoder` in metadata.json)."""

    LAME = "lame"
    """LAME's library called directly, a second of audio per call."""
    PYAV = "pyav-libmp3lame"
    """FFmpeg's `libmp3lame` encoder through PyAV (the fallback)."""


@functools.cache
def lame_library_path() -> str | None:
    """The LAME library FFmpeg's `libmp3lame` uses: the one bundled with PyAV's wheel
    (loading it again returns the handle already loaded), else the system's; None when
    there is neither."""
    bundled = sorted((Path(av.__file__).parent.parent / "av.libs").glob("libmp3lame*.so*"))
    return str(bundled[0]) if bundled else ctypes.util.find_library("mp3lame")


def pyav_has_libmp3lame() -> bool:
    """Whether PyAV's FFmpeg has the `libmp3lame` encoder."""
    try:
        av.codec.Codec("libmp3lame", "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def available() -> Mp3Encoder | None:
    """The encoder finalization will use, or None when there is no MP3 encoder at all."""
    if lame_library_path() is not None:
        return Mp3Encoder.LAME
    if pyav_has_libmp3lame():
        return Mp3Encoder.PYAV
    return None


def describe(encoder: Mp3Encoder | None) -> str:
    """`encoder` in words, for the start-up log, `/readyz` and `storyroom check`."""
    if encoder is Mp3Encoder.LAME:
        return f"LAME, called directly ({lame_library_path()})"
    if encoder is Mp3Encoder.PYAV:
        return (
            "LAME's library cannot be loaded directly: FFmpeg's libmp3lame through PyAV "
            "(the same MP3, more slowly)"
        )
    return "no MP3 encoder: neither LAME's library nor FFmpeg's libmp3lame is installed"
