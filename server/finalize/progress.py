"""The progress file of a running finalization: written by the worker process, read by
the job that watches it (`{"percent", "stage"}`, replaced atomically)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Final

from storyroom.status import FinalizeStage

INTERVAL_S: Final = 0.5
"""The worker writes at most this often (unless a stage changes or it is forced)."""
REPLACING_SUFFIX: Final = ".tmp"
"""The next version of the file, before it replaces the last."""


class ProgressFile:
    """Writes `{"percent", "stage"}` to a JSON file, at most twice a second; with no
    path, nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.last = 0.0
        self.state: tuple[int, str] | None = None

    def __call__(self, stage: FinalizeStage, fraction: float, force: bool = False) -> None:
        if self.path is None:
            return
        percent = max(0, min(100, int(fraction * 100)))
        now = time.monotonic()
        if (percent, stage) == self.state or (
            not force
            and self.state is not None
            and self.state[1] == stage
            and now - self.last < INTERVAL_S
        ):
            return
        self.state, self.last = (percent, stage), now
        temp = self.path.with_name(self.path.name + REPLACING_SUFFIX)
        temp.write_text(json.dumps({"percent": percent, "stage": stage}), encoding="utf-8")
        os.replace(temp, self.path)


def read_progress(path: Path) -> tuple[float, str] | None:
    """(percent, stage) last written, or None (no file yet, or one being replaced)."""
    try:
        written = json.loads(path.read_text("utf-8"))
        return float(written["percent"]), str(written["stage"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
