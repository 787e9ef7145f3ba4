"""Recordings finalized before `waveform.json` existed get their waveform too: made from
the access copy on the first request (staff, copy page, public page alike), kept as a
hidden file so the archived listing, manifest and metadata stay as they were, and read
from that file afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from storyroom.recording.layout import DERIVED_LEVELS, MANIFEST, WAVEFORM_LEVELS
from support.archive import Finished, copy_of, issue_copy_links
from support.server import RunningServer, serving
from support.staff import StaffBrowser, add_staff

# the old recording is made by editing the SQLite file itself
pytestmark = pytest.mark.embedded_database


def make_it_old(data_dir: Path, recording_id: str) -> list[int]:
    """Take `waveform.json` out of a finalized recording as if it predated it: out of
    the folder, the stored listing and the manifest. Returns the levels it had."""
    folder = data_dir / "recordings" / recording_id
    original = json.loads((folder / WAVEFORM_LEVELS).read_text())["levels"]
    (folder / WAVEFORM_LEVELS).unlink()
    manifest = folder / MANIFEST
    manifest.write_text(
        "".join(
            line
            for line in manifest.read_text().splitlines(keepends=True)
            if not line.endswith(f"  {WAVEFORM_LEVELS}\n")
        )
    )
    with contextlib.closing(sqlite3.connect(data_dir / "storyroom.sqlite3")) as db, db:
        [(stored,)] = db.execute("SELECT finalized FROM recordings WHERE id = ?", (recording_id,))
        finalized = json.loads(stored)
        finalized["files"] = [f for f in finalized["files"] if f["name"] != WAVEFORM_LEVELS]
        db.execute(
            "UPDATE recordings SET finalized = ? WHERE id = ?",
            (json.dumps(finalized), recording_id),
        )
    return list(original)


@pytest.fixture
async def old(finished: Finished, tmp_path: Path) -> AsyncIterator[tuple[RunningServer, list[int]]]:
    data_dir = copy_of(finished, tmp_path / "data")
    original = make_it_old(data_dir, finished.recording_id)
    async with serving(data_dir) as server:
        await add_staff(server)
        yield server, original


@pytest.fixture
def archive(old: tuple[RunningServer, list[int]]) -> RunningServer:
    """The `staff` fixture signs in to the old recording's server."""
    return old[0]


async def test_an_old_recording_gets_its_waveform_on_first_request(
    old: tuple[RunningServer, list[int]], staff: StaffBrowser, finished: Finished
) -> None:
    server, original = old
    rec_id = finished.recording_id
    folder = server.settings.recordings_dir / rec_id
    manifest_before = (folder / MANIFEST).read_bytes()
    metadata_before = (folder / "metadata.json").read_bytes()
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    assert WAVEFORM_LEVELS not in {f["name"] for f in rec["files"]}
    assert rec["levels_url"] == f"/api/recordings/{rec_id}/waveform"
    assert not (folder / DERIVED_LEVELS).exists()

    # three players ask at once: one document for all, made once, no half-written files
    async with aiohttp.ClientSession() as http:
        public = f"{server.url}/api/public/recordings/{rec_id}/waveform"
        staff_url = server.url + rec["levels_url"]
        responses = await asyncio.gather(
            staff.http.get(staff_url, headers=staff.headers()),
            staff.http.get(staff_url, headers=staff.headers()),
            http.get(public),
        )
        assert [r.status for r in responses] == [200, 200, 200]
        bodies = [await r.read() for r in responses]
    assert len(set(bodies)) == 1
    made = json.loads(bodies[0])
    assert made["version"] == 1 and len(made["levels"]) == 1000
    assert abs(made["duration_s"] - rec["duration_s"]) < 0.01
    stored = folder / DERIVED_LEVELS
    assert stored.read_bytes() == bodies[0]
    assert sorted(p.name for p in folder.glob(".waveform*")) == [DERIVED_LEVELS]

    # the same shape as the finalizer drew from the master: the access copy is the same
    # mix at another loudness (a constant offset on this dB scale) through MP3
    new, old_levels = np.array(made["levels"], float), np.array(original, float)
    sounding = (old_levels > 20) & (new > 20)
    assert sounding.mean() > 0.5
    offset = np.median(new[sounding] - old_levels[sounding])
    assert np.percentile(np.abs(new[sounding] - old_levels[sounding] - offset), 90) < 8

    # the archive as it was: listing, manifest and metadata untouched
    again = await staff.call("GET", f"/api/recordings/{rec_id}")
    assert again["files"] == rec["files"]
    assert (folder / MANIFEST).read_bytes() == manifest_before
    assert (folder / "metadata.json").read_bytes() == metadata_before

    # later requests read the stored file (with its ETag), never decode again
    made_at = stored.stat().st_mtime_ns
    async with aiohttp.ClientSession() as http:
        resp = await http.get(public)
        assert resp.status == 200 and await resp.read() == bodies[0]
        etag = resp.headers["ETag"]
        resp = await http.get(public, headers={"If-None-Match": etag})
        assert resp.status == 304
    assert stored.stat().st_mtime_ns == made_at

    # the copy page offers it too, through its own route
    [link, _] = await issue_copy_links(staff, rec_id)
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {link['token']}"}
        page = await (await http.get(f"{server.url}/api/copy", headers=auth)).json()
        assert page["waveform_url"] == "/api/copy/waveform"
        resp = await http.get(f"{server.url}/api/copy/waveform", headers=auth)
        assert resp.status == 200 and await resp.read() == bodies[0]


async def test_no_waveform_without_an_access_copy_or_staff(
    old: tuple[RunningServer, list[int]], finished: Finished
) -> None:
    server, _ = old
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{server.url}/api/recordings/{finished.recording_id}/waveform")
        assert resp.status == 401
        resp = await http.get(f"{server.url}/api/public/recordings/rec_0000000000000000/waveform")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    assert not (server.settings.recordings_dir / finished.recording_id / DERIVED_LEVELS).exists()
