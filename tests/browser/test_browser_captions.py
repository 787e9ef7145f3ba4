"""Captions from the transcript on the participant's copy page, in real Chromium, on a
real recording of real speech: while the copy plays, the line being said appears under
the player with its speaker's name, and the "Captions" toggle hides and shows it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from support.archive import issue_copy_links
from support.browser import screenshot, watched_page
from support.polling import wait_for
from support.server import RunningServer
from support.staff import add_staff, signed_in
from support.transcripts import rosa_then_dale

pytestmark = pytest.mark.slow

TIME_SLACK_S = 1.0


def spoken_words(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", text.lower()))


async def caption_of(page: Page, turn: dict[str, Any]) -> str:
    """The caption line once it shows a cue of `turn`: its speaker's name, then a run
    of the words said in that turn (a long turn is captioned a few words at a time),
    read with the audio's time at that moment, which lies inside the turn."""
    prefix = f"{turn['name']}: "

    async def shown() -> tuple[str, float] | None:
        text, at = await page.evaluate(
            "() => [document.querySelector('.caption-line').textContent,"
            " document.querySelector('audio.player').currentTime]"
        )
        return (text, float(at)) if text.startswith(prefix) else None

    text, at = await wait_for(shown, timeout=30, interval=0.05, what=f"{prefix}in the captions")
    said = spoken_words(text.removeprefix(prefix))
    assert said and said in spoken_words(turn["text"]), (text, turn)
    # timeupdate fires every quarter second or so: the line may lag the audio that much
    assert turn["start"] - TIME_SLACK_S <= at <= turn["end"] + TIME_SLACK_S, (at, turn)
    return text


async def test_the_copy_page_shows_who_says_what_while_it_plays(
    server: RunningServer, browser: Browser
) -> None:
    spoken, turns = await rosa_then_dale(server)  # as the staff transcript test's
    await add_staff(server)
    async with signed_in(server) as staff:
        link = (await issue_copy_links(staff, spoken.recording_id))[0]

    async with watched_page(browser, link["url"]) as (page, watch):
        captions = page.locator(".player-captions")
        line = page.locator(".caption-line")
        await expect(captions).to_be_visible()
        assert int(await captions.get_attribute("data-cues") or 0) >= len(turns)
        await expect(line).to_have_attribute("aria-live", "off")
        await expect(line).to_have_text("")  # nothing said before the audio plays
        await page.evaluate("() => document.querySelector('audio.player').play()")
        # Rosa speaks first: her name and words appear while the audio is inside her turn
        await caption_of(page, turns[0])
        await screenshot(page, "copy-captions")

        toggle = page.get_by_role("button", name="Captions")
        await expect(toggle).to_have_attribute("aria-pressed", "true")
        await toggle.click()
        await expect(toggle).to_have_attribute("aria-pressed", "false")
        await expect(line).to_be_hidden()
        await toggle.click()
        await expect(line).to_be_visible()

        # then Dale's turn, named
        await caption_of(page, turns[1])
        watch.assert_clean()
