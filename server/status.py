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


class FinalizeStatus(StrEnum):
    """Where a stopped take is on its way to the archival files."""

    QUEUED = "queued"
    FINALIZING = "finalizing"
    READY = "ready"
    FAILED = "failed"
