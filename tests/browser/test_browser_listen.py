"""The participant's copy page and the public listening page in real Chromium, on a
390-px phone, in English and Spanish: the player streams the conversation with its
questions as chapters and the waveform; each choice says what it means and which side
it waits for; a clip downloads; /listen shows a conversation only while both agree."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import pytest
from playwright.async_api import Browser, Page, expect

from support.archive import Finished, issue_copy_links
from support.browser import horizontal_overflow, screenshot, watched_page
from support.polling import wait_for
from support.server import RunningServer, bio
from support.staff import StaffBrowser

pytestmark = pytest.mark.slow

PHONE_390 = {"width": 390, "height": 844}


async def playable(page: Page) -> bool:
    """The page's audio element has loaded the recording's length (it can play)."""
    value: Any = await page.evaluate(
        "() => { const a = document.querySelector('audio.player');"
        " return a ? a.readyState >= 1 && a.duration > 0 : false; }"
    )
    return bool(value)


async def seek_by_chapter(page: Page, name: str) -> float:
    await page.get_by_role("button", name=name).click()
    value: Any = await page.evaluate("() => document.querySelector('audio.player').currentTime")
    return float(value)


async def test_the_copy_page_plays_explains_and_clips(
    archive: RunningServer,
    staff: StaffBrowser,
    finished: Finished,
    browser: Browser,
    tmp_path: Path,
) -> None:
    rosa, _ = await issue_copy_links(staff, finished.recording_id)
    rec = await staff.call("GET", f"/api/recordings/{finished.recording_id}")
    chapters = rec["chapters"]
    assert len(chapters) == 2
    async with watched_page(browser, rosa["url"], PHONE_390, accept_downloads=True) as (
        page,
        watch,
    ):
        await expect(page.locator("#greeting")).to_contain_text("Hello Rosa")
        await wait_for(lambda: playable(page), what="the copy streaming in the player")
        await expect(page.locator(".waveform-box")).to_be_visible()
        await expect(page.locator(".waveform-box")).to_have_attribute("data-levels", "1000")
        # the second question: the player jumps there
        second = f"Play from question 2: {chapters[1]['title']}"
        at = await seek_by_chapter(page, second)
        assert abs(at - chapters[1]["start_s"]) < 0.25
        await expect(page.locator(".player-chapters li").nth(1)).to_have_attribute(
            "aria-current", "true"
        )
        # both agreed to everything in the room
        await expect(page.locator("#state-public")).to_have_text(
            "In effect: you and Dale both agreed, so the public can listen now."
        )
        await expect(
            page.get_by_label("Let the public listen to the recording")
        ).to_have_accessible_description(
            "Anyone can listen on our public page, with your first names and short bios and"
            " nothing else about you. It happens only if you and your partner both agree."
            " In effect: you and Dale both agreed, so the public can listen now."
        )
        # a clip to share: the right length, downloaded
        await page.get_by_label("Start (minutes:seconds)").fill("0:00.5")
        await page.get_by_label("End (minutes:seconds)").fill("0:02")
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="Make the clip").click()
        clip = tmp_path / "clip.mp3"
        await (await download_info.value).save_as(clip)
        with av.open(io.BytesIO(clip.read_bytes())) as container:
            samples = sum(f.samples for f in container.decode(audio=0))
        assert abs(samples / 48_000 - 1.5) < 0.03
        await expect(page.locator("#clip-status")).to_have_text(
            "Your clip is ready and downloading."
        )
        await page.get_by_label("End (minutes:seconds)").fill("0:00.2")
        await page.get_by_role("button", name="Make the clip").click()
        await expect(page.locator("#clip-status")).to_have_text(
            "The end must come after the start."
        )
        # Rosa withdraws public: her page says it now waits for her; no clips
        await page.get_by_label("Let the public listen to the recording").uncheck()
        await page.get_by_role("button", name="Save my choices").click()
        await expect(page.locator("#state-public")).to_have_text(
            "Waiting for you: Dale said yes. It takes effect only if you agree too."
        )
        await expect(page.locator("#clip-card")).to_be_hidden()
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "copy-player-phone")

        # in Spanish
        await page.locator("#lang-select").select_option("es")
        await expect(page.locator("#state-public")).to_have_text(
            "Esperando su respuesta: Dale dijo que sí. Solo entra en vigor si usted también"
            " está de acuerdo."
        )
        await expect(page.locator("#state-archive")).to_have_text(
            "En vigor: usted y Dale están de acuerdo."
        )
        await expect(page.get_by_role("button", name="Descargar la grabación")).to_be_visible()
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "copy-player-phone-es")
        # the refused (reversed) clip is the only failed request
        assert watch.errors == [
            "error: Failed to load resource: the server responded with a status of 400 (Bad Request)"
        ]


async def test_listen_shows_a_conversation_only_while_both_agree(
    archive: RunningServer, staff: StaffBrowser, finished: Finished, browser: Browser
) -> None:
    rec_id = finished.recording_id
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    async with watched_page(browser, f"{archive.url}/listen", PHONE_390) as (page, watch):
        card = page.locator(f'article[data-recording="{rec_id}"]')
        await expect(card).to_be_visible()
        await expect(card.get_by_role("heading", level=2)).to_have_text(rec["title"])
        await expect(card).to_contain_text("A conversation between Rosa and Dale")
        await expect(card).to_contain_text(bio("a"))
        await expect(card).to_contain_text(bio("b"))
        await expect(card.locator(".waveform-box")).to_have_attribute("data-levels", "1000")
        await wait_for(lambda: playable(page), what="the public recording in the player")
        first = f"Play from question 1: {rec['chapters'][0]['title']}"
        at = await seek_by_chapter(page, first)
        assert abs(at - rec["chapters"][0]["start_s"]) < 0.25
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "listen-phone")

        # Dale withdraws: gone at the next visit
        body = {"seat": "b", "public": False, "note": "by phone"}
        await staff.call("PUT", f"/api/recordings/{rec_id}/consent", body)
        await page.reload()
        await expect(page.locator("#listen-empty")).to_have_text(
            "No conversations are public yet. Please come back later."
        )
        await expect(card).to_have_count(0)
        watch.assert_clean()

    # agreed again, in Spanish at /escuchar
    body = {"seat": "b", "public": True, "note": "by phone"}
    await staff.call("PUT", f"/api/recordings/{rec_id}/consent", body)
    async with watched_page(browser, f"{archive.url}/escuchar", PHONE_390) as (page, watch):
        card = page.locator(f'article[data-recording="{rec_id}"]')
        await expect(card).to_contain_text("Una conversación entre Rosa y Dale")
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Conversaciones más allá de las diferencias"
        )
        await expect(card.get_by_role("heading", name="Preguntas")).to_be_visible()
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "listen-phone-es")
        watch.assert_clean()
