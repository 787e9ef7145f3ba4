"""Real speech with reference texts, from Debian packages, for the transcript tests and
bench/transcribe.py; word error rate; and an aiortc track that plays clips on cue.

- English: LibriVox readings of *Sense and Sensibility* (public domain) with their
  transcriptions, in `pocketsphinx-testdata` (16 kHz).
- Spanish: Asterisk's recorded prompts in Mexican Spanish (voice "Allison", CC BY-SA)
  in `asterisk-core-sounds-es-wav` (8 kHz telephone audio), their texts in
  `asterisk-core-sounds-es`'s `core-sounds-es.txt`.
tests/run.sh installs both.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from support.media import FRAME, RATE, ToneTrack, decode_ogg

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
ASTERISK_ES = Path("/usr/share/asterisk/sounds/es_MX_f_Allison")
ASTERISK_ES_TEXT = Path("/usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz")

ENGLISH = (
    "sense_and_sensibility_01_austen_64kb-0870",
    "sense_and_sensibility_01_austen_64kb-0890",
    "sense_and_sensibility_01_austen_64kb-0920",
    "sense_and_sensibility_01_austen_64kb-0880",
    "sense_and_sensibility_01_austen_64kb-0930",
)
SPANISH = (
    "demo-echotest",
    "conf-adminmenu-18",
    "demo-abouttotry",
    "queue-periodic-announce",
    "ss-noservice",
)
"""Prompts without digits in their texts (Whisper writes numbers as figures)."""


@dataclass(frozen=True)
class Clip:
    name: str
    language: str
    source: str
    """Where the clip comes from: package and file."""
    reference: str
    samples: np.ndarray
    """Mono float32 at 48 kHz."""

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def decode_wav(path: Path) -> np.ndarray:
    """Any file PyAV reads, as mono float32 at 48 kHz."""
    return decode_ogg(str(path)).astype(np.float32)


@cache
def _librivox_texts() -> dict[str, str]:
    texts = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        match = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
        if match:
            texts[match[2]] = match[1].strip()
    return texts


@cache
def _asterisk_texts() -> dict[str, str]:
    texts = {}
    with gzip.open(ASTERISK_ES_TEXT, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";"):
                texts[name.strip()] = text.strip()
    return texts


@cache
def clip(name: str) -> Clip:
    if name in _librivox_texts():
        path = LIBRIVOX / f"{name}.wav"
        return Clip(
            name, "en", f"pocketsphinx-testdata: {path}", _librivox_texts()[name], decode_wav(path)
        )
    path = ASTERISK_ES / f"{name}.wav"
    return Clip(
        name,
        "es",
        f"asterisk-core-sounds-es-wav: {path}",
        _asterisk_texts()[name],
        decode_wav(path),
    )


_NUMBERS = {"mr": "mister", "mrs": "missus"}


def words(text: str) -> list[str]:
    """Lower case, no punctuation, no diacritics (the Spanish references have none)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    tokens = re.findall(r"[a-z0-9ñ']+", text.replace("-", " "))
    return [_NUMBERS.get(t, t) for t in tokens]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / max(len(ref), 1)


class ClipTrack(ToneTrack):
    """A seat's microphone playing `programme` (mono 48 kHz) from the moment `play()` is
    called, silence before and after: real-time paced like the tone tracks."""

    def __init__(self, programme: np.ndarray) -> None:
        super().__init__(freq=0.0, level=0.0)
        self.programme = programme
        self.started_at: int | None = None
        """The sample (from the first one sent) where the programme began."""

    def play(self) -> None:
        self.started_at = self._samples

    @property
    def played_s(self) -> float:
        """Seconds of the programme handed to the sender so far."""
        return 0.0 if self.started_at is None else (self._samples - self.started_at) / RATE

    def signal(self, n: np.ndarray) -> np.ndarray:
        out = np.zeros(FRAME, dtype=np.float32)
        if self.started_at is None:
            return out
        index = n - self.started_at
        inside = (index >= 0) & (index < len(self.programme))
        out[inside] = self.programme[index[inside]]
        return out


def programme(placed: list[tuple[float, Clip]], seconds: float) -> np.ndarray:
    """Silence of `seconds` with each clip placed at its start (seconds)."""
    out = np.zeros(int(seconds * RATE), dtype=np.float32)
    for start, c in placed:
        at = int(start * RATE)
        out[at : at + len(c.samples)] = c.samples[: len(out) - at]
    return out
