"""The staff recording page with shared storage, in real Chromium: the player and a
file link follow the presigned redirects to the store (SeaweedFS on loopback) within
the page's Content-Security-Policy, and what comes from the store is the archived file."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Response, expect

from storyroom.orgs import EVERY_ORGANISATION
from support.archive import Finished
from support.browser import sign_in_as_staff, watched_page
from support.polling import wait_for
from support.seaweedfs import SeaweedS3, seaweed_s3
from support.server import RunningServer

pytestmark = pytest.mark.slow


@pytest.fixture
async def s3(tmp_path: Path) -> AsyncIterator[SeaweedS3]:
    async with seaweed_s3(tmp_path / "s3") as store:
        yield store


@pytest.fixture
def archive_settings(s3: SeaweedS3) -> dict[str, Any]:
    """The `archive` server ships to and downloads from `s3`."""
    return {k.removeprefix("STORYROOM_").lower(): v for k, v in s3.settings().items()}


async def test_the_staff_player_and_downloads_come_from_the_store(
    archive: RunningServer, finished: Finished, browser: Browser, s3: SeaweedS3, tmp_path: Path
) -> None:
    # the copied recording was finalized without a bucket: its files go up as a
    # finalization with one would have sent them
    rec = await archive.services.store.get_recording(finished.recording_id, EVERY_ORGANISATION)
    shared = archive.services.shared
    assert rec is not None and rec.finalized is not None and shared is not None
    folder = archive.settings.recordings_dir / rec.id
    assert await shared.upload_finalized(rec.id, folder, rec.finalized.files)

    from_store: list[Response] = []
    url = f"{archive.url}/staff/recordings/{rec.id}"
    async with watched_page(browser, url, accept_downloads=True) as (page, watch):
        page.on(
            "response", lambda r: from_store.append(r) if r.url.startswith(s3.endpoint) else None
        )
        await sign_in_as_staff(page)
        await expect(page).to_have_url(url)
        await wait_for(
            lambda: page.evaluate(
                "() => (document.querySelector('#player')?.readyState ?? 0) >= 1"
            ),
            what="the access copy's metadata in the player",
        )
        played = [r for r in from_store if "/final/access.mp3?" in r.url]
        assert played and all(r.status in (200, 206) for r in played), [r.url for r in played]

        async with page.expect_download() as download_info:
            await page.locator('#files-body tr[data-file="master.wav"] a').click()
        download = await download_info.value
        # from the store, under the name the server gives it
        assert download.url.startswith(f"{s3.endpoint}/") and "/final/master.wav?" in download.url
        assert download.suggested_filename == f"{rec.id}-master.wav"
        saved = tmp_path / "master.wav"
        await download.save_as(saved)
        master = rec.finalized.file("master.wav")
        assert master is not None
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == master.sha256
        watch.assert_clean()  # no CSP refusal of the store's origin
