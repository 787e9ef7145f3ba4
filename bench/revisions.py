"""The code of an earlier git revision, to measure beside the current code in one run
(`--before REV` of bench/rooms.py and bench/finalize.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def extract_revision(revision: str, into: Path) -> Path:
    """`server/` of git `revision` as the package `storyroom` under `into`; returns the
    directory to put on PYTHONPATH (it wins over the editable install's finder)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision, "server"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "server").rename(into / "storyroom")
    return into
