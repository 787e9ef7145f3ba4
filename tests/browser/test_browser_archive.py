"""The staff archive in real Chromium, end to end: a staff member signs in, finds a
recording by a participant's first name, plays it by chapter, downloads every file,
exports a valid bag, hands out copy links, and a participant downloads their own copy
and changes their consent. Phone width and keyboard where people would use them."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Any

import bagit
import pytest
from playwright.async_api import Browser, Page, expect

from support.archive import TITLE, Finished
from support.browser import (
    PHONE,
    horizontal_overflow,
    screenshot,
    sign_in_as_staff,
    watched_page,
)
from support.polling import wait_for
from support.server import RunningServer
from support.staff import STAFF_EMAIL

pytestmark = pytest.mark.slow


async def current_time(page: Page) -> float:
    value: Any = await page.evaluate("() => document.querySelector('#player').currentTime")
    return float(value)


async def test_staff_find_play_download_export_and_a_participant_copy(
    archive: RunningServer, finished: Finished, browser: Browser, tmp_path: Path
) -> None:
    # the recordings page asks for a sign-in first, and comes back after it
    recordings = f"{archive.url}/staff/recordings"
    async with watched_page(browser, recordings, accept_downloads=True) as (page, watch):
        await expect(page).to_have_url(f"{archive.url}/staff/signin?next=/staff/recordings")
        await expect(page.get_by_label("Email")).to_be_focused()
        await sign_in_as_staff(page, password="not the password")
        await expect(page.locator("#sign-in-status")).to_have_text(
            "That email and password do not match an account."
        )
        await screenshot(page, "archive-signin")
        await sign_in_as_staff(page)
        await expect(page).to_have_url(f"{archive.url}/staff/recordings")
        await expect(page.locator("#signed-in-as")).to_have_text(STAFF_EMAIL)

        # find it by a participant's first name
        await page.get_by_label("First name").fill("Nobody")
        await page.get_by_role("button", name="Search").click()
        await expect(page.locator("#results-status")).to_have_text("No recordings match.")
        await page.get_by_label("First name").fill("rosa")
        await page.get_by_role("button", name="Search").click()
        rows = page.locator("#results-body tr")
        await expect(rows).to_have_count(1)
        await expect(rows).to_contain_text("Rosa, Dale, with Sam")
        await expect(rows).to_contain_text("Recording ready")
        assert "name=rosa" in page.url
        await screenshot(page, "archive-recordings")
        await rows.get_by_role("link", name=TITLE).click()
        await expect(page).to_have_url(f"{archive.url}/staff/recordings/{finished.recording_id}")

        # play it by chapter: the list and the marks on the waveform
        await expect(page.locator("#rec-title")).to_have_text(TITLE)
        chapters = page.locator("#chapters button")
        await expect(chapters).to_have_count(2)
        await wait_for(
            lambda: page.evaluate("() => document.querySelector('#player').readyState >= 1"),
            what="the access copy's metadata in the player",
        )
        # the shared player draws the waveform from the recording's levels
        await expect(page.locator("#player-root .waveform-box")).to_have_attribute(
            "data-levels", "1000"
        )
        rec = await (
            await page.request.get(f"{archive.url}/api/recordings/{finished.recording_id}")
        ).json()
        second = rec["chapters"][1]["start_s"]
        await chapters.nth(1).click()
        await wait_for(lambda: _near(page, second), what="the player at the second chapter")
        await expect(page.locator("#chapters li").nth(1)).to_have_attribute("aria-current", "true")
        mark = page.get_by_role("button", name="Question 1 at 0:0")
        await mark.first.focus()
        await page.keyboard.press("Enter")
        await wait_for(lambda: _near(page, rec["chapters"][0]["start_s"]), what="chapter 1")
        await page.evaluate("() => document.querySelector('#player').pause()")

        # every file, with the size and checksum the page shows
        file_rows = page.locator("#files-body tr")
        await expect(file_rows).to_have_count(len(rec["files"]))
        for entry in rec["files"]:
            row = page.locator(f'#files-body tr[data-file="{entry["name"]}"]')
            await expect(row.locator("code")).to_have_text(f"sha256:{entry['sha256']}")
            response = await page.request.get(archive.url + entry["url"])
            assert response.status == 200, entry["name"]
            assert hashlib.sha256(await response.body()).hexdigest() == entry["sha256"]
        async with page.expect_download() as download_info:
            await page.locator('#files-body tr[data-file="master.wav"] a').click()
        download = await download_info.value
        saved = tmp_path / "master.wav"
        await download.save_as(saved)
        master = next(f for f in rec["files"] if f["name"] == "master.wav")
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == master["sha256"]

        # edit the catalogue
        await page.get_by_label("Keywords").fill("faith, family, Ohio")
        await page.get_by_label("Location").fill("El Paso, Texas")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#meta-status")).to_have_text("Saved.")

        # copies: written-down consent of both, then the two links
        await page.get_by_role("button", name="Issue links for both").click()
        await expect(page.locator("#copies-status")).to_contain_text("Both participants must agree")
        consent_form = page.locator("#consent-form")
        for person in ("Rosa (Participant A)", "Dale (Participant B)"):
            await consent_form.get_by_label("Person").select_option(label=person)
            await consent_form.get_by_label("Copies").select_option("yes")
            await consent_form.get_by_label("How they told you").fill("Said yes on the phone")
            await consent_form.get_by_role("button", name="Record").click()
            await expect(page.locator("#consent-status")).to_have_text("Recorded.")
        await expect(
            page.locator('#consent-body tr[data-seat="b"] td[data-consent="copies"]')
        ).to_have_text("yes")
        await page.get_by_role("button", name="Issue links for both").click()
        links = page.locator("#new-links .link-input")
        await expect(links).to_have_count(2)
        rosa_link = await links.nth(0).input_value()
        assert rosa_link.startswith(f"{archive.url}/copy#token=")
        await expect(page.locator("#links-body tr")).to_have_count(2)

        # a validated bag, downloaded
        await page.get_by_role("button", name="Make a bag").click()
        await expect(page.locator("#export-status")).to_contain_text(
            "The bag is ready and valid", timeout=60_000
        )
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Download (.tar)").click()
        tar_path = tmp_path / "bag.tar"
        await (await download_info.value).save_as(tar_path)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp_path / "bag", filter="data")
        bag = bagit.Bag(str(tmp_path / "bag" / f"{finished.recording_id}-bag"))
        bag.validate()
        assert bag.info["External-Identifier"] == finished.recording_id
        await screenshot(page, "archive-recording")
        # the wrong password and the refused links are the only failed requests
        assert watch.errors == [
            "error: Failed to load resource: the server responded with a status of 401 (Unauthorized)",
            "error: Failed to load resource: the server responded with a status of 409 (Conflict)",
        ]

        # the participant's own copy, on a phone
        phone = watched_page(browser, rosa_link, PHONE, accept_downloads=True)
        async with phone as (copy_page, copy_watch):
            await expect(copy_page.locator("#greeting")).to_contain_text("Hello Rosa")
            await expect(copy_page.locator("#consent-public")).to_be_checked()
            async with copy_page.expect_download() as download_info:
                await copy_page.get_by_role("button", name="Download the recording").click()
            copy_file = tmp_path / "copy.mp3"
            await (await download_info.value).save_as(copy_file)
            access = next(f for f in rec["files"] if f["kind"] == "access")
            assert hashlib.sha256(copy_file.read_bytes()).hexdigest() == access["sha256"]
            await expect(copy_page.locator("#download-status")).to_have_text(
                "Downloaded. You can also listen here."
            )
            await copy_page.get_by_label("Let the public listen to the recording").uncheck()
            await copy_page.get_by_role("button", name="Save my choices").click()
            await expect(copy_page.locator("#consent-status")).to_have_text(
                "Your choices are saved. Thank you."
            )
            assert await horizontal_overflow(copy_page) == 0
            await screenshot(copy_page, "archive-copy-phone")
            copy_watch.assert_clean()
            # a link without its key says so in plain words
            await copy_page.goto(f"{archive.url}/copy")
            await expect(copy_page.locator("#refused-text")).to_have_text(
                "This link is missing its key. Please open the full link you were sent."
            )

        # staff see her change in the history, and every action in the audit log
        await page.reload()
        await expect(page.locator("#history")).to_contain_text("on their copy page")
        await expect(
            page.locator('#consent-body tr[data-seat="a"] td[data-consent="public"]')
        ).to_have_text("no")
        await page.get_by_role("link", name="Audit log").click()
        await expect(page.locator("#audit-body tr").first).to_be_visible()
        actions = await page.locator("#audit-body tr").evaluate_all(
            "rows => rows.map(r => r.dataset.action)"
        )
        assert {
            "sign_in",
            "sign_in_failed",
            "download",
            "edit",
            "consent",
            "copies_issued",
            "export",
        } <= set(actions)
        await screenshot(page, "archive-audit")
        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{archive.url}/staff/signin")
        response = await page.request.get(f"{archive.url}/api/staff/me")
        assert response.status == 401


async def _near(page: Page, seconds: float) -> bool:
    return abs(await current_time(page) - seconds) < 0.3


async def test_recording_page_on_a_phone_and_deletion(
    archive: RunningServer, finished: Finished, browser: Browser
) -> None:
    url = f"{archive.url}/staff/recordings/{finished.recording_id}"
    async with watched_page(browser, url, PHONE) as (page, watch):
        await sign_in_as_staff(page)
        await expect(page).to_have_url(f"{archive.url}/staff/recordings/{finished.recording_id}")
        await expect(page.locator("#chapters button")).to_have_count(2)
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "archive-recording-phone")
        await page.get_by_role("button", name="Delete this recording").click()
        dialog = page.get_by_role("dialog", name="Delete this recording for good?")
        await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        await dialog.get_by_role("button", name="Yes, delete it").click()
        await expect(page).to_have_url(f"{archive.url}/staff/recordings")
        await expect(page.locator("#results-status")).to_have_text("No recordings match.")
        assert not (archive.settings.recordings_dir / finished.recording_id).exists()
        watch.assert_clean()
