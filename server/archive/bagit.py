"""BagIt export (RFC 8493, with bagit-python): a recording's files as a bag for an archive.

The payload (`data/`) is every file the finalizer listed (master, stems, access copy,
chapters, waveform, metadata.json, its sha256 manifest, the raw Opus stems and timing
logs) plus `storyroom-catalogue.json` (the edited catalogue fields and the consent record
with its history). Manifests and tag manifests are sha256 and sha512; bag-info.txt has
Source-Organization, Organization-Address and Contact-* from settings,
External-Identifier (the recording id), External-Description, Bag-Group-Identifier (the
session id), Conversation-Kind (`facilitated` or `self_guided`), and bagit-python's Bagging-Date, Payload-Oxum and Bag-Software-Agent.
Every bag is validated (all checksums re-read) before it is handed out.

Payload files are hard links to the recording's files where the file system allows
(no second copy of a 40-minute master), else copies.

`make_bag` changes the process's working directory, so in the server it runs in a
spawned worker process (`BagMaker`), never on a thread of the server's process. The
command line calls `build_bag` directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyroom.seats import SessionKind

CHECKSUMS = ("sha256", "sha512")
CATALOGUE = "storyroom-catalogue.json"
TAR_BLOCK = 512
TAR_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class BagRequest:
    """Plain data for the worker process."""

    source_dir: str
    files: tuple[str, ...]
    """Names relative to source_dir, exactly as the finalizer listed them."""
    bag_dir: str
    """Created by the build; must not exist yet."""
    bag_info: dict[str, str]
    catalogue: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BagResult:
    bag_dir: str
    files: int
    bytes: int
    payload_oxum: str


def bag_info(
    *,
    organization: str,
    address: str,
    contact_name: str,
    contact_email: str,
    contact_phone: str,
    recording_id: str,
    session_id: str,
    description: str,
    kind: SessionKind,
) -> dict[str, str]:
    """bag-info.txt fields; empty settings are left out. `Conversation-Kind` (ours, as
    BagIt allows) says whether a facilitator ran the conversation."""
    info = {
        "Source-Organization": organization,
        "Organization-Address": address,
        "Contact-Name": contact_name,
        "Contact-Email": contact_email,
        "Contact-Phone": contact_phone,
        "External-Identifier": recording_id,
        "External-Description": " ".join(description.split()),
        "Bag-Group-Identifier": session_id,
        "Conversation-Kind": kind.value,
    }
    return {key: value for key, value in info.items() if value}


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_bag(request: BagRequest) -> BagResult:
    """Make and validate the bag. Blocking; changes the working directory while it runs."""
    import bagit

    source = Path(request.source_dir).resolve()
    bag_dir = Path(request.bag_dir).resolve()
    bag_dir.mkdir(parents=True, exist_ok=False)
    try:
        for name in request.files:
            path = (source / name).resolve()
            if source not in path.parents or not path.is_file():
                raise FileNotFoundError(f"{name} is not a file of the recording")
            _place(path, bag_dir / name)
        with open(bag_dir / CATALOGUE, "x", encoding="utf-8") as f:
            json.dump(request.catalogue, f, ensure_ascii=False, indent=2)
            f.write("\n")
        bagit.make_bag(str(bag_dir), dict(request.bag_info), processes=1, checksums=list(CHECKSUMS))
        bag = bagit.Bag(str(bag_dir))
        bag.validate(processes=1)
    except BaseException:
        shutil.rmtree(bag_dir, ignore_errors=True)
        raise
    files = [p for p in bag_dir.rglob("*") if p.is_file()]
    return BagResult(
        bag_dir=str(bag_dir),
        files=len(files),
        bytes=sum(p.stat().st_size for p in files),
        payload_oxum=str(bag.info["Payload-Oxum"]),
    )


def validate_bag(bag_dir: Path) -> None:
    """Raise bagit.BagValidationError unless the bag is complete and every checksum holds."""
    import bagit

    bagit.Bag(str(bag_dir)).validate(processes=1)


class BagMaker:
    """Runs `build_bag` in one spawned worker process, started on first use.
    Owner: app.py (closed in its cleanup context)."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def make(self, request: BagRequest) -> BagResult:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, build_bag, request)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# -- a bag as one tar stream -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TarMember:
    header: bytes
    path: Path
    size: int


def tar_members(bag_dir: Path, root: str) -> tuple[list[TarMember], int]:
    """The bag's files under `root/` as ustar members, and the whole stream's length."""
    members = []
    total = 2 * TAR_BLOCK  # end of archive
    for path in sorted(p for p in bag_dir.rglob("*") if p.is_file()):
        info = tarfile.TarInfo(f"{root}/{path.relative_to(bag_dir).as_posix()}")
        stat = path.stat()
        info.size = stat.st_size
        info.mtime = int(stat.st_mtime)
        info.mode = 0o644
        header = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        members.append(TarMember(header, path, stat.st_size))
        total += len(header) + stat.st_size + (-stat.st_size % TAR_BLOCK)
    return members, total


def tar_chunks(members: list[TarMember]) -> Iterator[bytes]:
    """The tar stream in chunks (blocking reads: iterate it off the event loop)."""
    for member in members:
        yield member.header
        left = member.size
        with open(member.path, "rb") as f:
            while left > 0:
                chunk = f.read(min(TAR_CHUNK, left))
                if not chunk:
                    raise OSError(f"{member.path} shrank while it was being sent")
                left -= len(chunk)
                yield chunk
        if member.size % TAR_BLOCK:
            yield bytes(TAR_BLOCK - member.size % TAR_BLOCK)
    yield bytes(2 * TAR_BLOCK)


def catalogue(
    *,
    recording: dict[str, Any],
    metadata: dict[str, Any],
    people: dict[str, str],
    consent: dict[str, Any],
    consent_history: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "recording": recording,
        "catalogue": {k: metadata[k] for k in ("title", "description", "keywords", "location")},
        "people": people,
        "consent": consent,
        "consent_history": consent_history,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
