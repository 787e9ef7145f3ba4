"""The typed seam of finalization: what the worker process is given and what it returns.

:class:`FinalizeInput` is built in the server's process from the database (the worker
has none) and pickled to the worker; :class:`Finalized` comes back and is stored, as
JSON, in the `recordings.finalized` column, where the archive, the API and the copy
links read it. Plain dataclasses and enums only: the store and the web edge import this
module, so it must stay free of the heavy audio libraries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from storyroom.records import FieldsRecord
from storyroom.seats import SessionKind
from storyroom.status import RecordingState

__all__ = [
    "AccessLoudness",
    "Chapter",
    "ConsentFlags",
    "Cue",
    "Damage",
    "DamageKind",
    "FileKind",
    "FinalizeError",
    "FinalizeInput",
    "Finalized",
    "FinalizedFile",
    "LoudnessReport",
    "Marker",
    "MasterLoudness",
    "chapters_json",
]


class FinalizeError(RuntimeError):
    """Nothing could be produced; the message says why in plain words."""


# -- what the worker is given ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cue(FieldsRecord):
    """A question cued during the take, on its recording clock."""

    seq: int
    question_id: str
    text: str
    """The question in the session's language ("" if unknown: the id stands in)."""
    rec_time: float


@dataclass(frozen=True, slots=True)
class Marker(FieldsRecord):
    """A facilitator's marker (or a pause/resume the server logged), on the recording clock."""

    seq: int
    label: str
    rec_time: float


@dataclass(frozen=True, slots=True)
class ConsentFlags(FieldsRecord):
    """One seat's current consent, as `metadata.json` records it."""

    record: bool
    archive: bool
    public: bool


@dataclass(frozen=True, slots=True)
class FinalizeInput(FieldsRecord):
    """What finalization needs besides the recording directory (from the database)."""

    recording_id: str
    session_id: str
    title: str
    language: str
    take: int
    started_at: float
    """Wall clock (epoch seconds) when recording started."""
    status: RecordingState
    """``stopped`` or ``interrupted``: the recording's state when finalization began."""
    seats: Mapping[str, str]
    """seat → first name (a, b, facilitator)."""
    consent: Mapping[str, ConsentFlags]
    cues: tuple[Cue, ...]
    markers: tuple[Marker, ...]
    duration_s: float | None
    """Recorded seconds by the room clock; None if unknown (then the stems decide)."""
    software: str
    originator: str = "storyroom"
    kind: SessionKind = SessionKind.FACILITATED
    """How the conversation was run: a self-guided one had no facilitator seat."""

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FinalizeInput:
        return cls(
            recording_id=value["recording_id"],
            session_id=value["session_id"],
            title=value["title"],
            language=value["language"],
            take=value["take"],
            started_at=value["started_at"],
            status=RecordingState(value["status"]),
            seats=dict(value["seats"]),
            consent={seat: ConsentFlags(**flags) for seat, flags in value["consent"].items()},
            cues=tuple(Cue(**cue) for cue in value["cues"]),
            markers=tuple(Marker(**marker) for marker in value["markers"]),
            duration_s=value["duration_s"],
            software=value["software"],
            originator=value.get("originator", "storyroom"),
            kind=SessionKind(value.get("kind", SessionKind.FACILITATED.value)),
        )


# -- what it returns ------------------------------------------------------------------------


class DamageKind(StrEnum):
    """What was lost or doubtful in a seat's input (`metadata.json`'s `damaged[].kind`)."""

    NO_AUDIO = "no_audio"
    """A stretch of a seat with no packets: a disconnect, an outage, a seat never heard."""
    PACKET_LOSS = "packet_loss"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"
    UNDECODABLE = "undecodable"
    EMPTY_STEM = "empty_stem"
    MISSING_STEM = "missing_stem"
    MISSING_TIMING = "missing_timing"
    TIMING_LINES = "timing_lines"
    UNPLACED = "unplaced"
    CORRUPT = "corrupt"
    MISSING_PAGES = "missing_pages"


@dataclass(frozen=True, slots=True)
class Damage:
    """Something lost or doubtful in one seat's input, on the recording clock."""

    seat: str
    source: str
    """The input file concerned, relative to the recording directory."""
    kind: DamageKind
    reason: str
    start_s: float | None = None
    end_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seat": self.seat,
            "source": self.source,
            "kind": self.kind.value,
            "start_s": _clock(self.start_s),
            "end_s": _clock(self.end_s),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Damage:
        return cls(
            seat=value["seat"],
            source=value["source"],
            kind=DamageKind(value["kind"]),
            reason=value["reason"],
            start_s=value["start_s"],
            end_s=value["end_s"],
        )


def _clock(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class FileKind(StrEnum):
    """What a listed file is (the API's `files[].kind`)."""

    MASTER = "master"
    STEM = "stem"
    ACCESS = "access"
    CHAPTERS = "chapters"
    WAVEFORM = "waveform"
    METADATA = "metadata"
    MANIFEST = "manifest"
    TRANSCRIPT = "transcript"
    """The machine transcript (JSON, WebVTT captions, text), made after finalization."""
    SOURCE = "source"
    """A raw input kept beside the outputs: a stem segment, a timing log, the event log."""


@dataclass(frozen=True, slots=True)
class FinalizedFile(FieldsRecord):
    """One file of a finalized recording, relative to its directory, with its checksum."""

    name: str
    kind: FileKind
    bytes: int
    sha256: str

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FinalizedFile:
        return cls(value["name"], FileKind(value["kind"]), value["bytes"], value["sha256"])


@dataclass(frozen=True, slots=True)
class Chapter(FieldsRecord):
    """A chapter of the recording: it starts at a cue and runs to the next."""

    start_s: float
    title: str


@dataclass(frozen=True, slots=True)
class MasterLoudness:
    """The master as written (after its clip-preventing gain, if any)."""

    integrated_lufs: float | None
    loudness_range_lu: float | None
    sample_peak_dbfs: float | None
    gain_db: float


@dataclass(frozen=True, slots=True)
class AccessLoudness:
    """The access copy as measured by decoding what was written, and how it was made."""

    integrated_lufs: float | None
    true_peak_dbtp: float | None
    loudness_range_lu: float | None
    target_lufs: float
    true_peak_limit_dbtp: float
    gain_db: float
    limiter_ceiling_dbtp: float
    limited_s: float
    max_gain_reduction_db: float
    encodes: int
    encoder: str = "lame"
    """`mp3_encoder.Mp3Encoder`: which encoder made the copy (results stored before it
    was recorded were all made by LAME called directly)."""


@dataclass(frozen=True, slots=True)
class LoudnessReport(FieldsRecord):
    master: MasterLoudness
    access: AccessLoudness

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> LoudnessReport:
        return cls(MasterLoudness(**value["master"]), AccessLoudness(**value["access"]))


@dataclass(frozen=True, slots=True)
class Finalized:
    """A finalized recording: its files, chapters, loudness and damage.

    Stored as JSON in `recordings.finalized` (:meth:`to_json`, :meth:`from_json`)."""

    duration_s: float
    files: tuple[FinalizedFile, ...]
    chapters: tuple[Chapter, ...]
    loudness: LoudnessReport
    damaged: tuple[Damage, ...]

    def file(self, name: str) -> FinalizedFile | None:
        """The listed file called `name`, if there is one."""
        return next((f for f in self.files if f.name == name), None)

    def first_of(self, kind: FileKind) -> FinalizedFile | None:
        """The first listed file of this kind, if any."""
        return next((f for f in self.files if f.kind is kind), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "files": [f.to_json() for f in self.files],
            "chapters": [c.to_json() for c in self.chapters],
            "loudness": self.loudness.to_json(),
            "damaged": [d.to_json() for d in self.damaged],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Finalized:
        return cls(
            duration_s=value["duration_s"],
            files=tuple(FinalizedFile.from_json(f) for f in value["files"]),
            chapters=tuple(Chapter(c["start_s"], c["title"]) for c in value["chapters"]),
            loudness=LoudnessReport.from_json(value["loudness"]),
            damaged=tuple(Damage.from_json(d) for d in value["damaged"]),
        )


def chapters_json(finalized: Finalized | None) -> list[dict[str, Any]]:
    """The chapters as the API shows them (none before the recording is finalized)."""
    return [c.to_json() for c in finalized.chapters] if finalized is not None else []
