"""A whole conversation in real Chromium: two participants and a facilitator join with
their links, check their microphones, consent, choose questions, record, cue, pause,
mark, talk and stop; every page shows what it should and every voice arrives."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from support.browser import (
    EXPECT_MS,
    LAPTOP,
    PHONE,
    Seat,
    assert_hears,
    bank_text,
    horizontal_overflow,
    screenshot,
    seat_page,
    turn_on_microphone,
    with_raw_audio,
)
from support.media import TONES, decode_ogg, dominant_frequency
from support.polling import wait_for
from support.server import RunningServer, bio, create_session

pytestmark = pytest.mark.slow

TALK_S = 20.0


async def expect_state(seats: list[Seat], state: str, label: str) -> None:
    for seat in seats:
        indicator = seat.page.locator("#rec-indicator")
        await expect(indicator).to_have_attribute("data-state", state, timeout=EXPECT_MS)
        await expect(indicator).to_have_text(label, timeout=EXPECT_MS)


async def test_three_seats_hold_a_whole_conversation(
    server: RunningServer, seat_browsers: dict[str, Browser]
) -> None:
    created = await create_session(server.url)
    links = {seat: with_raw_audio(created["seats"][seat]["url"]) for seat in TONES}
    async with contextlib.AsyncExitStack() as stack:
        a, b, f = [
            await stack.enter_async_context(
                seat_page(seat_browsers[seat], links[seat], seat, viewport)
            )
            for seat, viewport in (("a", PHONE), ("b", PHONE), ("facilitator", LAPTOP))
        ]
        await conversation(server, created["id"], a, b, f)


async def conversation(server: RunningServer, session_id: str, a: Seat, b: Seat, f: Seat) -> None:
    everyone = [a, b, f]
    participants = [a, b]

    # -- everyone sees who they will talk with -------------------------------------
    await expect(a.page.locator("#welcome-title")).to_have_text("Welcome, Rosa")
    await expect(a.page.locator("#partner-name")).to_have_text("Dale")
    await expect(a.page.locator("#partner-bio")).to_have_text(bio("b"))
    await expect(a.page.locator("#facilitator-name")).to_have_text("Sam")
    await expect(b.page.locator("#partner-name")).to_have_text("Rosa")
    await expect(b.page.locator("#partner-bio")).to_have_text(bio("a"))
    for seat, name in (("a", "Rosa"), ("b", "Dale"), ("facilitator", "Sam (you)")):
        card = f.page.locator(f'.seat-card[data-seat="{seat}"]')
        await expect(card.locator(".seat-name")).to_have_text(name)
        await expect(card).to_have_attribute("data-connected", "true", timeout=EXPECT_MS)
    await expect(a.page.locator("#partner-presence")).to_have_text("In the room")
    for person in everyone:
        await expect(person.page.locator("#rec-indicator")).to_have_text("Not recording yet")
        await expect(person.page.locator("#conn-indicator")).to_have_attribute(
            "data-state", "connected", timeout=EXPECT_MS
        )

    # -- browser and microphone check ---------------------------------------------
    await expect(a.page.locator('#browser-checks li[data-check="secure"]')).to_have_class("ok")
    await expect(a.page.locator('#browser-checks li[data-check="webrtc"]')).to_have_class("ok")
    for person in everyone:
        await turn_on_microphone(person.page)
    meter = a.page.locator("#mic-panel [data-role=meter]")
    await wait_for(lambda: _meter_above(meter, 20), timeout=30, what="a's own level meter moving")
    await a.page.get_by_role("button", name="Hear yourself (3 seconds)").click()
    await expect(a.page.locator("[data-role=playback-status]")).to_contain_text(
        "Done.", timeout=EXPECT_MS
    )
    for person in everyone:
        await expect(person.page.locator("#audio-status")).to_have_attribute(
            "data-state", "connected", timeout=20_000
        )

    # -- consent ---------------------------------------------------------------------
    await expect(f.page.locator("#start-hint")).to_have_text(
        "Waiting for Rosa, Dale to agree to the recording."
    )
    await a.page.get_by_label("Record this conversation").check()
    await a.page.get_by_label("Keep it in a library archive").check()
    await a.page.get_by_role("button", name="Save my choices").click()
    await expect(a.page.locator("#consent-status")).to_have_text(
        "Saved. Recording: yes. Library archive: yes. Public: no."
    )
    await b.page.get_by_label("Record this conversation").check()
    await b.page.get_by_label("Make it public").check()
    await b.page.get_by_role("button", name="Save my choices").click()
    await expect(b.page.locator("#consent-status")).to_contain_text(
        "Saved. Recording: yes. Library archive: no. Public: yes."
    )
    await expect(b.page.locator("#consent-status")).to_contain_text(
        "Rosa did not agree to make it public"
    )
    card_a = f.page.locator('.seat-card[data-seat="a"]')
    await expect(card_a.locator('[data-kind="archive"]')).to_have_attribute("data-value", "true")
    await expect(card_a.locator('[data-kind="public"]')).to_have_attribute("data-value", "false")
    await expect(f.page.locator("#start-hint")).to_have_text(
        "Everyone is here and has agreed to the recording. You can start."
    )

    # -- question agreement ----------------------------------------------------------
    q0, q1, q2, q5 = bank_text(0), bank_text(1), bank_text(2), bank_text(5)
    for text in (q0, q1, q5):
        await a.page.get_by_role("checkbox", name=text).check()
    for text in (q0, q5):
        await b.page.get_by_role("checkbox", name=text).check()
    await expect(a.page.locator("#choose-status")).to_have_text("Saved: you chose 3.")
    await expect(b.page.locator("#choose-status")).to_have_text("Saved: you chose 2.")
    await expect(a.page.locator(f'.question-choice:has-text("{q0}") .partner-mark')).to_have_text(
        "Dale would like this too"
    )
    bank_item = f.page.locator(f'.bank-item:has-text("{q5}") .bank-picks')
    await expect(bank_item).to_have_text("Marked by Rosa, Dale")
    await f.page.get_by_role("button", name="Add the questions both participants marked").click()
    editor = f.page.locator("#agreed-editor .agreed-text")
    await expect(editor).to_have_text([q0, q5])
    await f.page.get_by_role("button", name=f"Add to the agreed list: {q2}").click()
    await expect(editor).to_have_text([q0, q5, q2])
    await f.page.get_by_role("button", name=f"Move up: {q2}").click()
    await expect(editor).to_have_text([q0, q2, q5])
    for person in participants:
        await expect(person.page.locator("#agreed-list li")).to_have_text([q0, q2, q5])

    # -- recording, cues by keyboard and by button --------------------------------------
    await f.page.get_by_role("button", name="Start recording").click()
    await expect_state(everyone, "recording", "Recording")
    for person in participants:
        await expect(person.page.get_by_label("Record this conversation")).to_be_disabled()

    await f.page.keyboard.press("n")
    for person in everyone:
        await expect(person.page.locator("#cue-text")).to_have_text(q0, timeout=EXPECT_MS)
    for person in participants:
        await expect(person.page.locator("#cue-announcer")).to_have_text(f"New question: {q0}")
        await expect(person.page.locator("#agreed-live-list li.current")).to_have_text(q0)
        size = await person.page.locator("#cue-text").evaluate(
            "node => parseFloat(getComputedStyle(node).fontSize)"
        )
        assert size >= 24, f"the cued question should be large, it is {size}px"
    await screenshot(a.page, "room-a-cue")
    await screenshot(b.page, "room-b-cue")
    await screenshot(f.page, "console-cue")

    # each page hears the other two seats
    await assert_hears(f.page, ["a", "b"])
    await assert_hears(a.page, ["b", "facilitator"])
    await assert_hears(b.page, ["a", "facilitator"])

    await f.page.get_by_role("button", name="Pause").click()
    await expect_state(everyone, "paused", "Recording paused")
    await f.page.get_by_role("button", name="Resume").click()
    await expect_state(everyone, "recording", "Recording")

    await f.page.get_by_role("button", name="Next question").click()
    for person in everyone:
        await expect(person.page.locator("#cue-text")).to_have_text(q2, timeout=EXPECT_MS)
    await expect(a.page.locator("#cue-announcer")).to_have_text(f"New question: {q2}")

    await f.page.get_by_label("Label").fill("great story")
    await f.page.get_by_role("button", name="Add marker").click()
    await expect(f.page.locator("#marker-list li")).to_contain_text(["great story"])
    await f.page.get_by_label("Note", exact=True).fill("Rosa's story about her grandmother")
    await f.page.get_by_role("button", name="Save note").click()
    await expect(f.page.locator("#note-list li")).to_contain_text(["her grandmother"])
    await expect(f.page.locator("#note-list .time")).to_contain_text(["into the recording"])

    # about twenty seconds of talk, on the room's recording clock
    room = server.services.rooms.live(session_id)
    assert room is not None
    await wait_for(lambda: room.elapsed() >= TALK_S, timeout=TALK_S + 30, what=f"{TALK_S} s")

    async def timer_shows_it() -> str | None:  # the page's timer follows within a tick
        text = await a.page.locator("#timer-elapsed").text_content()
        return text if text is not None and text >= "0:19" else None

    await wait_for(timer_shows_it, what="a's timer at 0:19 or later")
    assert await horizontal_overflow(a.page) == 0

    # -- stop, after confirming ---------------------------------------------------------
    await f.page.get_by_role("button", name="Stop recording").click()
    dialog = f.page.get_by_role("dialog", name="Stop the recording?")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Keep recording").click()
    await expect(dialog).to_have_count(0)
    await expect_state(everyone, "recording", "Recording")
    await f.page.get_by_role("button", name="Stop recording").click()
    await f.page.get_by_role("dialog").get_by_role("button", name="Yes, stop recording").click()
    await expect_state(everyone, "stopped", "Recording finished")
    for person, first_name in zip(participants, ("Rosa", "Dale"), strict=True):
        await expect(person.page.locator("#ended")).to_be_visible()
        await expect(person.page.locator("#ended-title")).to_have_text(f"Thank you, {first_name}")
        # the end screen has no question and no timer left on it
        await expect(person.page.locator("#cue-text")).to_be_hidden()
        await expect(person.page.locator("#timer")).to_be_hidden()

    await screenshot(a.page, "room-a-end")
    await screenshot(b.page, "room-b-end")
    await screenshot(f.page, "console-end")

    # -- each seat's stem holds that seat's own voice ------------------------------------
    assert room.recording is not None
    stems = server.settings.recordings_dir / room.recording.id / "stems"
    for seat, freq in TONES.items():
        segments = sorted(stems.glob(f"{seat}-*.opus"), key=lambda p: p.stat().st_size)
        assert segments, f"no stem for {seat}"
        audio = decode_ogg(str(segments[-1]))
        assert len(audio) >= 48_000 * 10, f"{seat}'s stem is {len(audio) / 48_000:.1f} s"
        middle = audio[len(audio) // 2 : len(audio) // 2 + 48_000]
        assert dominant_frequency(middle) == pytest.approx(freq, abs=5)

    for person in everyone:
        person.watch.assert_clean()


async def _meter_above(meter: Any, percent: int) -> bool:
    value = await meter.get_attribute("aria-valuenow")
    return value is not None and int(value) >= percent
