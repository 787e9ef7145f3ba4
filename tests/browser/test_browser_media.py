"""Live audio in real Chromium: the facilitator's console receives both participants'
fake-microphone tones, muting silences a voice, and after a network drop the page
reconnects by itself with a fresh peer connection."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from support.browser import (
    EXPECT_MS,
    LAPTOP,
    PHONE,
    Seat,
    assert_hears,
    received_tone,
    seat_page,
    turn_on_microphone,
    with_raw_audio,
)
from support.media import TONES, tone_room
from support.polling import wait_for
from support.server import RunningServer, create_session, serving

SPANISH = json.loads((Path(__file__).parents[2] / "static/i18n/es.json").read_text())

pytestmark = pytest.mark.slow


async def audio_state(page: Page) -> tuple[str, str | None]:
    state: list[str | None] = await page.evaluate(
        "() => [window.storyroom.client.audioState, window.storyroom.client.audioError]"
    )
    return str(state[0]), state[1]


async def settled_audio(page: Page) -> tuple[str, str | None] | None:
    state = await audio_state(page)
    return state if state[0] in ("connected", "unavailable", "failed") else None


async def audio_state_is(page: Page, wanted: str) -> tuple[str, str | None] | None:
    state = await audio_state(page)
    return state if state[0] == wanted else None


async def silent(page: Page, seat: str) -> bool:
    return await received_tone(page, seat, TONES[seat]) is None


async def test_the_facilitator_hears_both_participants_and_survives_a_drop(
    server: RunningServer, seat_browsers: dict[str, Browser]
) -> None:
    created = await create_session(server.url)
    async with contextlib.AsyncExitStack() as stack:
        seats: dict[str, Seat] = {}
        for seat in TONES:
            link = with_raw_audio(created["seats"][seat]["url"])
            viewport = LAPTOP if seat == "facilitator" else PHONE
            seats[seat] = await stack.enter_async_context(
                seat_page(seat_browsers[seat], link, seat, viewport)
            )
            await turn_on_microphone(seats[seat].page)
        console = seats["facilitator"].page
        state = await wait_for(
            lambda: settled_audio(console), timeout=30, what="the console's audio"
        )
        if state == ("unavailable", "media_unavailable"):
            pytest.skip("the server answers rtc:offer with media_unavailable (no media plane)")
        assert state[0] == "connected", state
        await expect(console.locator("#audio-status")).to_have_text("Sound connected.")

        # both participants' tones reach the console, each on its own seat
        await assert_hears(console, ["a", "b"])
        for seat in ("a", "b"):
            meter = console.locator(f'.seat-card[data-seat="{seat}"] .meter')
            await expect(meter).to_have_attribute("data-active", "true", timeout=EXPECT_MS)
            quality = console.locator(f'.seat-card[data-seat="{seat}"] .quality')
            # measured, not "no data yet"; on loopback "good", though a machine whose cores
            # are all busy delays packets enough (jitter ~30 ms) to read "fair"
            await expect(quality).to_have_attribute(
                "data-quality", re.compile(r"^(good|fair)$"), timeout=EXPECT_MS
            )
            await expect(quality).to_contain_text(re.compile(r"^Connection (good|fair)"))

        # muting a participant silences that voice only
        a = seats["a"].page
        await a.get_by_role("button", name="Mute").click()
        await expect(a.get_by_role("button", name="Mute")).to_have_attribute("aria-pressed", "true")
        await expect(a.locator("#audio-status")).to_have_text(
            "You are muted. The others cannot hear you."
        )
        await wait_for(lambda: silent(console, "a"), timeout=30, what="a to fall silent")
        await wait_for(
            functools.partial(received_tone, console, "b", TONES["b"]),
            timeout=30,
            what="b still heard",
        )
        await a.get_by_role("button", name="Mute").click()
        await wait_for(
            functools.partial(received_tone, console, "a", TONES["a"]),
            timeout=30,
            what="a again",
        )

        # a network drop: the socket closes under the page; it comes back by itself
        await console.evaluate(
            """() => {
                window.firstPeerConnection = window.storyroom.client.pc;
                window.storyroom.client.socket.io.engine.close();
            }"""
        )
        await expect(console.locator("#banner-text")).to_contain_text(
            "The connection dropped", timeout=EXPECT_MS
        )
        await expect(console.locator("#conn-indicator")).to_have_attribute(
            "data-state", "connected", timeout=EXPECT_MS
        )
        await expect(console.locator("#banner")).to_be_hidden()
        await expect(console.locator("#audio-status")).to_have_text(
            "Sound connected.", timeout=EXPECT_MS
        )
        fresh = await console.evaluate(
            "() => window.storyroom.client.pc !== window.firstPeerConnection"
        )
        assert fresh, "the console should build a new peer connection after a drop"
        await assert_hears(console, ["a", "b"])
        # and the participants hear the facilitator again, without renegotiating
        await assert_hears(a, ["facilitator"])
        await expect(a.locator("#facilitator-presence")).to_have_text("In the room")
        for person in seats.values():
            person.watch.assert_clean()


async def test_a_full_server_says_audio_is_unavailable_and_connects_once_a_room_frees(
    tmp_path: Path, browser: Browser
) -> None:
    """At its room limit the server refuses a new room's audio (`server_full`): the seat
    says, in its language, that audio is unavailable here now, and keeps asking; once the
    first room's seats leave, the audio connects."""
    async with serving(tmp_path / "data", max_rooms=1) as server:
        created = await create_session(server.url, language="es")
        link = with_raw_audio(created["seats"]["a"]["url"])
        async with contextlib.AsyncExitStack() as first_room:
            # the one room the server has audio for, its seats connected before the
            # second room's page opens (a page may offer as soon as it loads)
            await first_room.enter_async_context(tone_room(server.url))
            async with seat_page(browser, link, "a", PHONE) as seat:
                await turn_on_microphone(seat.page)
                state = await wait_for(
                    lambda: settled_audio(seat.page), timeout=30, what="a's audio"
                )
                assert state == ("unavailable", "server_full"), state
                await expect(seat.page.locator("#audio-status")).to_have_text(
                    SPANISH["audio.unavailable"], timeout=EXPECT_MS
                )
                await first_room.aclose()  # the first room's seats leave
                # the next retry finds room
                state = await wait_for(
                    lambda: audio_state_is(seat.page, "connected"), timeout=60, what="a connected"
                )
                assert state[0] == "connected"
