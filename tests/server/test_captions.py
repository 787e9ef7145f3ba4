"""Captions (`transcript.vtt`) for the participant's copy and the public player, on the
run's shared recording: served to a copy link (bearer or the copy cookie) and, for a
recording both made public, to anyone; refused with a clear code otherwise, consent
being checked on every request."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from storyroom.finalize import outputs
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.recording import layout
from storyroom.recording.layout import recording_dir
from storyroom.status import FinalizeStatus
from support.archive import Finished, issue_copy_links
from support.polling import wait_for
from support.server import RunningServer
from support.staff import StaffBrowser, cookie_session


async def transcribed(archive: RunningServer, recording_id: str) -> None:
    jobs = archive.services.transcribe_jobs
    await wait_for(
        lambda: jobs.current is None and not jobs.queued, timeout=120, what="the first job"
    )
    rec = await archive.services.store.get_recording(recording_id, EVERY_ORGANISATION)
    assert rec is not None and rec.finalized is not None
    assert rec.finalized.file(layout.TRANSCRIPT_VTT) is not None, "no transcript to caption"


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """Status, the error's code (or None) and the body's text."""
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        text = await resp.text()
        code = (await resp.json())["error"]["code"] if resp.status >= 400 else None
        return resp.status, code, text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def forget_transcript(archive: RunningServer, recording_id: str) -> None:
    """As for a recording made before the transcription extra was installed: the
    recording's listing has no transcript files."""
    store = archive.services.store
    rec = await store.get_recording(recording_id, EVERY_ORGANISATION)
    assert rec is not None and rec.finalized is not None
    directory = recording_dir(archive.settings.recordings_dir, recording_id)
    finalized = outputs.relist(directory, rec.finalized, (), layout.TRANSCRIPT_FILES)
    await store.set_finalize(recording_id, FinalizeStatus.READY, 100.0, None, finalized)


async def test_the_copy_and_the_public_get_captions(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rec_id = finished.recording_id
    await transcribed(archive, rec_id)
    on_disk = (archive.settings.recordings_dir / rec_id / layout.TRANSCRIPT_VTT).read_text()
    assert on_disk.startswith("WEBVTT")
    link = (await issue_copy_links(staff, rec_id))[0]

    async with cookie_session() as http:
        async with http.get(f"{archive.url}/api/copy", headers=bearer(link["token"])) as resp:
            assert resp.status == 200
            page = await resp.json()
        assert page["captions_url"] == "/api/copy/captions"
        # the page's cookie alone opens the captions, as it opens the audio
        async with http.get(f"{archive.url}/api/copy/captions") as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/vtt")
            assert await resp.text() == on_disk
        async with http.get(f"{archive.url}/api/public/recordings") as resp:
            listed = (await resp.json())["recordings"]
    public = f"/api/public/recordings/{rec_id}/captions"
    assert [r["captions_url"] for r in listed] == [public]
    status, _, text = await get(f"{archive.url}{public}")
    assert (status, text) == (200, on_disk)


@pytest.mark.parametrize(
    ("case", "copy_status", "copy_code", "public_status", "public_code"),
    [
        ("no_token", 401, "link_missing", 200, None),
        ("wrong_token", 401, "link_invalid", 200, None),
        ("not_bearer", 401, "link_missing", 200, None),
        ("no_copies", 403, "no_copies_consent", 200, None),
        ("not_public", 200, None, 404, "not_found"),
        ("no_transcript", 404, "no_transcript", 404, "no_transcript"),
        ("withdrawn", 404, "transcript_withdrawn", 404, "transcript_withdrawn"),
        ("bad_recording_id", 200, None, 404, "not_found"),
    ],
)
async def test_captions_refused_with_a_clear_code(
    archive: RunningServer,
    staff: StaffBrowser,
    finished: Finished,
    case: str,
    copy_status: int,
    copy_code: str | None,
    public_status: int,
    public_code: str | None,
) -> None:
    rec_id = finished.recording_id
    await transcribed(archive, rec_id)
    links = await issue_copy_links(staff, rec_id)
    tokens = {"token": links[0]["token"], "other": links[1]["token"]}
    headers = bearer(tokens["token"])
    public = f"{archive.url}/api/public/recordings/{rec_id}/captions"
    consent = f"/api/recordings/{rec_id}/consent"
    if case == "no_token":
        headers = {}
    elif case == "wrong_token":
        headers = bearer(tokens["token"][:-2] + "xx")
    elif case == "not_bearer":
        headers = {"Authorization": f"Basic {tokens['token']}"}
    elif case == "no_copies":
        await staff.call("PUT", consent, {"seat": "b", "copies": False, "note": "no"})
    elif case == "not_public":
        await staff.call("PUT", consent, {"seat": "b", "public": False, "note": "no"})
    elif case == "no_transcript":
        await forget_transcript(archive, rec_id)
    elif case == "withdrawn":
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"{archive.url}/api/copy/consent",
                json={"archive": False, "public": True},
                headers=bearer(tokens["other"]),
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
    elif case == "bad_recording_id":
        public = f"{archive.url}/api/public/recordings/no-such-recording/captions"

    status, code, _ = await get(f"{archive.url}/api/copy/captions", headers)
    assert (status, code) == (copy_status, copy_code)
    status, code, _ = await get(public)
    assert (status, code) == (public_status, public_code)
