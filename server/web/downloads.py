"""Sending a recording's files: a strong ETag (the file's SHA-256), conditional requests
(If-None-Match, If-Match, If-Range) and single byte ranges, streamed in chunks read off
the event loop. The path is always one of a recording's own files, named by the
finalizer's listing (`recording_file`), never by input.

With shared storage, a GET of a listed file that the store holds is answered, after the
caller's authorisation and audit, with a redirect (307) to a short-lived presigned URL:
the store then serves the bytes and honours `Range` itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from storyroom.archive.clips import Clipper
from storyroom.archive.copies import access_entry
from storyroom.archive.protocol import parse_clip
from storyroom.archive.waveforms import WaveformLevels
from storyroom.errors import NotFound
from storyroom.finalize.contracts import FinalizedFile
from storyroom.recording.layout import WAVEFORM_LEVELS, recording_dir
from storyroom.status import FinalizeStatus
from storyroom.storage.recordings import RecordingStorage
from storyroom.store import RecordingRow

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
FIRST_BYTES = re.compile(r"^\s*bytes=0-\s*$")
CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".opus": "audio/ogg",
    ".vtt": "text/vtt; charset=utf-8",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".tar": "application/x-tar",
}


def recording_file(recordings_dir: Path, recording_id: str, name: str, missing: str) -> Path:
    """The file `name` (from the finalizer's listing) inside the recording's folder;
    `NotFound(missing)` when it is absent or would lie outside that folder."""
    root = recording_dir(recordings_dir, recording_id).resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        raise NotFound(missing)
    return path


def whole_download(request: web.Request) -> bool:
    """A download worth counting or an audit line: not a player's later range requests."""
    wanted = request.headers.get("Range")
    return request.method == "GET" and (wanted is None or bool(FIRST_BYTES.match(wanted)))


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def _etag_listed(header: str, etag: str) -> bool:
    values = [v.strip() for v in header.split(",")]
    return "*" in values or etag in values or f"W/{etag}" in values


def _headers(etag: str, filename: str) -> dict[str, str]:
    return {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }


def _precondition(request: web.Request, etag: str, headers: dict[str, str]) -> web.Response | None:
    """412 or 304 when If-Match or If-None-Match say so; None to send the file."""
    if_match = request.headers.get("If-Match")
    if if_match is not None and not _etag_listed(if_match, etag):
        return web.Response(status=412, headers=headers)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_listed(if_none_match, etag):
        return web.Response(status=304, headers=headers)
    return None


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single satisfiable range; None for 416.
    Raises ValueError for a header we do not use (several ranges, other units)."""
    match = RANGE_RE.match(header.strip())
    if match is None:
        raise ValueError(header)
    first, last = match.groups()
    if not first and not last:
        raise ValueError(header)
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


async def send_file(
    request: web.Request, path: Path, *, sha256: str, filename: str
) -> web.StreamResponse:
    """Send `path` (GET or HEAD) as an attachment named `filename`."""
    size = (await asyncio.to_thread(path.stat)).st_size
    etag = f'"{sha256}"'
    headers = _headers(etag, filename)
    unchanged = _precondition(request, etag, headers)
    if unchanged is not None:
        return unchanged
    start, end, status = 0, size - 1, 200
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if wanted is not None and (if_range is None or if_range.strip() == etag):
        try:
            chosen = _byte_range(wanted, size)
        except ValueError:
            pass  # several ranges or another unit: the whole file
        else:
            if chosen is None:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            start, end = chosen
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Type"] = content_type(filename)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start + 1 if size else 0
    await response.prepare(request)
    if request.method == "HEAD" or not size:
        await response.write_eof()
        return response
    f = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(f.seek, start)
        left = end - start + 1
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:
                break
            await response.write(chunk)
            left -= len(chunk)
        await response.write_eof()
    except ConnectionResetError:
        log.debug("%s: the client went away during the download", request.path)
    finally:
        f.close()
    return response


def listed_file(recordings_dir: Path, rec: RecordingRow, name: str, missing: str) -> FinalizedFile:
    """The finalizer's listing of `name` in a ready recording; `NotFound(missing)` else."""
    entry = (
        rec.finalized.file(name)
        if rec.finalized is not None and rec.finalize_status is FinalizeStatus.READY
        else None
    )
    if entry is None:
        raise NotFound(missing)
    return entry


async def send_listed(
    request: web.Request,
    recordings_dir: Path,
    rec: RecordingRow,
    entry: FinalizedFile,
    filename: str,
    shared: RecordingStorage | None = None,
) -> web.StreamResponse:
    """One of a ready recording's listed files, as `send_file` sends it; a GET of one
    that `shared` holds is redirected to a presigned URL of it instead."""
    if shared is not None and request.method == "GET":
        etag = f'"{entry.sha256}"'
        headers = _headers(etag, filename)
        unchanged = _precondition(request, etag, headers)
        if unchanged is not None:
            return unchanged
        url = await shared.download_url(rec.id, entry, filename, content_type(filename))
        if url is not None:
            # 307: the client repeats the same GET (with its Range) at the store
            return web.Response(status=307, headers={"Location": url, "Cache-Control": "no-store"})
    path = recording_file(recordings_dir, rec.id, entry.name, "no such file")
    return await send_file(request, path, sha256=entry.sha256, filename=filename)


async def send_levels(
    request: web.Request, waveforms: WaveformLevels, rec: RecordingRow
) -> web.StreamResponse:
    """A ready recording's waveform levels (`waveform.json`), listed or made on demand."""
    found = await waveforms.levels(rec)
    return await send_file(request, found.path, sha256=found.sha256, filename=WAVEFORM_LEVELS)


async def send_clip(
    request: web.Request, clipper: Clipper, recordings_dir: Path, rec: RecordingRow, payload: Any
) -> web.Response:
    """A clip of a ready recording's access copy, for the range the payload asks for
    (checked in `archive.protocol.parse_clip`)."""
    entry = access_entry(rec)
    if entry is None or rec.finalized is None:
        raise NotFound("the recording is not ready")
    wanted = parse_clip(payload, rec.finalized.duration_s)
    path = recording_file(recordings_dir, rec.id, entry.name, "the recording is not ready")
    clip = await clipper.cut(path, wanted)
    name = f"clip-{rec.id}-{int(wanted.start_s)}-{int(wanted.end_s)}.{clip.suffix}"
    return web.Response(
        body=clip.data,
        headers={
            "Content-Type": clip.content_type,
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Clip-Seconds": f"{clip.seconds:.3f}",
        },
    )
