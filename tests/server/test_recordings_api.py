"""After a real three-seat session (the run's `finished` recording), staff fetch the
finalized files over HTTP."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp

from support.archive import Finished
from support.server import AUTH, RunningServer


async def get_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=AUTH, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_a_finished_recording_downloads_with_ranges(
    archive: RunningServer, finished: Finished
) -> None:
    # the facilitator saw finalization reach its end
    assert finished.finalized["status"] == "ready"
    assert finished.finalized["finalize"]["percent"] == 100
    rec_id = finished.recording_id
    status, listing = await get_json(f"{archive.url}/api/recordings")
    assert status == 200 and [r["id"] for r in listing["recordings"]] == [rec_id]
    status, rec = await get_json(f"{archive.url}/api/recordings/{rec_id}")
    assert status == 200
    assert rec["status"] == "ready" and rec["session_id"] == finished.session_id
    shortest, longest = finished.recorded_s
    assert shortest - 0.1 <= rec["duration_s"] <= longest + 0.1, (finished.recorded_s, rec)
    kinds = {f["kind"] for f in rec["files"]}
    assert {"master", "stem", "access", "chapters", "metadata", "manifest"} <= kinds
    names = {f["name"] for f in rec["files"]}
    assert {"master.wav", "stems/a.flac", "stems/b.flac", "stems/facilitator.flac"} <= names
    assert len(rec["chapters"]) == 2

    async with aiohttp.ClientSession() as http:
        for entry in rec["files"]:
            async with http.get(archive.url + entry["url"], headers=AUTH) as resp:
                body = await resp.read()
                assert resp.status == 200, entry["name"]
                assert len(body) == entry["bytes"]
                assert hashlib.sha256(body).hexdigest() == entry["sha256"]
                assert resp.headers["ETag"] == f'"{entry["sha256"]}"'
        master = next(f for f in rec["files"] if f["name"] == "master.wav")
        async with http.get(
            archive.url + master["url"], headers={**AUTH, "Range": "bytes=0-11"}
        ) as resp:
            assert resp.status == 206
            head = await resp.read()
            assert head[:4] == b"RIFF" and head[8:12] == b"WAVE"
            assert resp.headers["Content-Range"].startswith("bytes 0-11/")
        async with http.get(
            archive.url + master["url"], headers={**AUTH, "Range": "bytes=100-"}
        ) as resp:
            assert resp.status == 206
            assert len(await resp.read()) == master["bytes"] - 100
        metadata = next(f for f in rec["files"] if f["name"] == "metadata.json")
        async with http.get(archive.url + metadata["url"], headers=AUTH) as resp:
            meta = json.loads(await resp.read())
        assert meta["recording_id"] == rec_id or meta.get("recording", {}).get("id") == rec_id
        assert "Rosa" in json.dumps(meta) and "token" not in json.dumps(meta).lower()
        # not listed, traversal, or another recording: 404 without touching the disk
        for bad in (
            "../../storyroom.sqlite3",
            "..%2F..%2Fstaff-token",
            "stems/a-01.opus.missing",
            "nope.wav",
        ):
            async with http.get(
                f"{archive.url}/api/recordings/{rec_id}/files/{bad}", headers=AUTH
            ) as resp:
                assert resp.status == 404, bad
        async with http.get(archive.url + master["url"]) as resp:
            assert resp.status == 401
