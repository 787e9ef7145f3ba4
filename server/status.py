"""Recording and finalization statuses: enums whose values are what the database stores."""

from __future__ import annotations

from enum import StrEnum


class RecordingState(StrEnum):
    """A take's recording state machine: idle -> recording <-> paused -> stopped.

    `interrupted` is a take the server stopped without a stop (a crash or restart).
    """

    IDLE = "idle"
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


class StopReason(StrEnum):
    """Why the server stopped a take by itself (`recordings.status_reason` of a
    `stopped` take; the room's `recording.stop_reason`)."""

    DISK_FULL = "disk_full"
    WRITE_FAILED = "write_failed"
    SERVER_RESTART = "server_restart"
    """The server was shut down (SIGTERM): the take was stopped and kept whole, and the
    session may go on with a new take once the server is back."""
    TIME_LIMIT = "time_limit"
    """A self-guided conversation reached its hard limit (`self_guided_limit_minutes`)."""


class FinalizeStatus(StrEnum):
    """Where a stopped take is on its way to the archival files."""

    QUEUED = "queued"
    FINALIZING = "finalizing"
    READY = "ready"
    FAILED = "failed"


class FinalizeStage(StrEnum):
    """What the finalizer is doing (its progress file's `stage`; the snapshot's
    `finalize.stage`, which the pages put in words)."""

    REBUILDING = "rebuilding"
    """Putting the voices back together from shared storage (before reading them)."""
    WAITING_FOR_CAPTURE = "waiting_for_capture"
    """Before reading: a browser is still uploading its own recording of the take."""
    READING = "reading"
    ANALYSING = "analysing"
    CALIBRATING = "calibrating"
    ENCODING = "encoding"
    ENCODING_ACCESS = "encoding_access"
    WRITING_METADATA = "writing_metadata"
    DONE = "done"


# A take whose voices are being written right now.
LIVE_STATES: tuple[RecordingState, ...] = (RecordingState.RECORDING, RecordingState.PAUSED)

# What staff see of a recording (RecordingRow.public_status), in the order of its life:
# the recording state until it stopped, then where finalization is ("queued" reads as
# "finalizing").
PUBLIC_STATUSES: tuple[str, ...] = tuple(
    state.value for state in RecordingState if state is not RecordingState.IDLE
) + tuple(status.value for status in FinalizeStatus if status is not FinalizeStatus.QUEUED)
