"""The transcript on the staff recording page, in real Chromium, on a real recording of
real speech: read it beside the player, click a line to play from there (the playing
line is highlighted), search inside it, correct a turn; and find the recording in the
archive by a word said."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from support.browser import screenshot, sign_in_as_staff, watched_page
from support.polling import wait_for
from support.server import RunningServer, call
from support.staff import add_staff
from support.transcripts import rosa_then_dale

pytestmark = pytest.mark.slow


async def test_staff_read_play_search_and_correct_a_transcript(
    server: RunningServer, browser: Browser
) -> None:
    spoken, turns = await rosa_then_dale(server)
    await add_staff(server)

    url = f"{server.url}/staff/recordings?said=amiable"
    async with watched_page(browser, url) as (page, watch):
        await sign_in_as_staff(page)
        rows = page.locator("#results-body tr")
        await expect(rows).to_have_count(1)
        await rows.get_by_role("link").first.click()
        lines = page.locator("#transcript-turns li")
        await expect(lines).to_have_count(2)
        await expect(lines.nth(0)).to_contain_text("Rosa")
        await expect(lines.nth(0)).to_contain_text(turns[0]["text"])
        await expect(lines.nth(1)).to_contain_text("Dale")
        await expect(page.locator("#transcript-notice")).to_contain_text("Machine transcript")

        # click Dale's line: the player jumps there and that line is the one highlighted
        await wait_for(
            lambda: page.evaluate("() => document.querySelector('#player').readyState >= 1"),
            what="the access copy in the player",
        )
        await lines.nth(1).get_by_role("button", name="Play from").click()
        position = await page.evaluate("() => document.querySelector('#player').currentTime")
        assert abs(position - turns[1]["start"]) < 0.3, (position, turns[1])
        await expect(lines.nth(1)).to_have_attribute("aria-current", "true")
        await expect(lines.nth(0)).not_to_have_attribute("aria-current", "true")

        # search inside: the line that says it is marked
        await page.get_by_label("Search in the transcript").fill("MARRIED")
        await expect(page.locator("#transcript-matches")).to_have_text("1 line has these words.")
        await expect(page.locator("#transcript-turns li.match")).to_have_count(1)
        await expect(lines.nth(0)).to_have_class("transcript-turn match")

        # correct Dale's turn: saved, shown with who, in the file and the search
        await lines.nth(1).get_by_role("button", name="Correct").click()
        editor = page.locator("#transcript-edit")
        await expect(editor).to_be_focused()
        await editor.fill("He was not an ill-disposed young man.")
        await page.get_by_role("button", name="Save correction").click()
        await expect(page.locator("#transcript-status")).to_have_text("Correction saved.")
        await expect(lines.nth(1)).to_contain_text("He was not an ill-disposed young man.")
        await expect(lines.nth(1)).to_contain_text("Corrected by")
        await screenshot(page, "recording-transcript")
        watch.assert_clean()

    async with aiohttp.ClientSession() as http:
        body = await call(
            http, "GET", f"{server.url}/api/recordings/{spoken.recording_id}/transcript"
        )
        assert body["transcript"]["turns"][1]["text"] == "He was not an ill-disposed young man."
        assert body["transcript"]["turns"][1]["corrected"]["by"]
