"""A whole self-guided conversation in real Chromium, in English and in Spanish: two
people who know each other open their links, read the guided introduction, join, check
their microphones, consent, and run the recording themselves (start, a cue from each,
pause and resume, a marker, stop after a confirmation); the take is finalized with a
stem per voice and a chapter per question."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from support.browser import (
    EXPECT_MS,
    PHONE,
    Seat,
    assert_hears,
    bank_text,
    screenshot,
    sign_in_as_staff,
    token_of,
    turn_on_microphone,
    watched_page,
    with_raw_audio,
)
from support.mail import outbox_messages, plain_text
from support.media import TONES
from support.polling import wait_for
from support.server import RunningServer, SeatClient, create_self_guided, finalized, serving
from support.staff import add_staff

pytestmark = pytest.mark.slow

STATIC = Path(__file__).resolve().parents[2] / "static"
LOCALES = {"en": "en-US", "es": "es-ES"}
TALK_S = 4.0


def say(lang: str, key: str, **values: Any) -> str:
    """A string of the page's catalogue in `lang`, with its placeholders filled."""
    text: str = json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8"))[key]
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


async def expect_state(pages: list[Page], state: str, label: str) -> None:
    for page in pages:
        indicator = page.locator("#rec-indicator")
        await expect(indicator).to_have_attribute("data-state", state, timeout=EXPECT_MS)
        await expect(indicator).to_have_text(label, timeout=EXPECT_MS)


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_two_people_run_a_self_guided_conversation(
    server: RunningServer, chromium: Any, lang: str
) -> None:
    created = await create_self_guided(server.url, language=lang)
    session_id = created["id"]
    async with contextlib.AsyncExitStack() as stack:
        seats: dict[str, Seat] = {}
        for seat in ("a", "b"):
            browser = await chromium(TONES[seat])
            page, watch = await stack.enter_async_context(
                watched_page(
                    browser,
                    with_raw_audio(created["seats"][seat]["url"]),
                    PHONE,
                    locale=LOCALES[lang],
                )
            )
            seats[seat] = Seat(seat, page, watch)
        a, b = seats["a"].page, seats["b"].page
        both = [a, b]

        # -- the guided introduction, before joining ------------------------------------
        for page in both:
            await expect(page.locator("#guided-intro")).to_be_visible()
            await expect(page.locator("#guided-intro-title")).to_have_text(
                say(lang, "guided.intro_title")
            )
            await expect(page.locator("#guided-intro")).to_contain_text(
                say(lang, "guided.intro_headphones")
            )
            await expect(page.locator("#guided-intro")).to_contain_text(
                say(lang, "guided.intro_either")
            )
            await expect(page.locator("#welcome")).to_be_hidden()
            await expect(page.locator("#consent-step")).to_be_hidden()
        await screenshot(a, f"together-intro-{lang}")
        room = server.services.rooms.live(session_id)
        assert room is None or not (room.connected("a") or room.connected("b"))
        for page in both:
            await page.get_by_role("button", name=say(lang, "guided.join")).click()
            await expect(page.locator("#guided-intro")).to_be_hidden()

        # -- two seats, no facilitator ------------------------------------------------
        await expect(a.locator("#welcome-title")).to_have_text(
            say(lang, "welcome.hello", name="Rosa")
        )
        await expect(a.locator("#partner-name")).to_have_text("Dale")
        await expect(b.locator("#partner-name")).to_have_text("Rosa")
        for page in both:
            await expect(page.locator("#partner-presence")).to_have_text(
                say(lang, "people.here"), timeout=EXPECT_MS
            )
            await expect(page.locator("#facilitator")).to_be_hidden()
            await expect(page.locator("#questions-step")).to_be_hidden()
            await expect(page.locator("#guided-controls")).to_be_visible()
            await turn_on_microphone(page)
        for page in both:
            await expect(page.locator("#audio-status")).to_have_attribute(
                "data-state", "connected", timeout=20_000
            )

        # -- consent from both before either can start ------------------------------------
        start = say(lang, "guided.start")
        await expect(a.get_by_role("button", name=start)).to_be_disabled()
        await expect(a.locator("#guided-reason")).to_have_text(
            say(lang, "guided.reason_consent", names="Rosa, Dale")
        )
        for page in both:
            await page.get_by_label(say(lang, "consent.record")).check()
            await page.get_by_label(say(lang, "consent.archive")).check()
            await page.get_by_role("button", name=say(lang, "consent.save")).click()
        for page in both:
            await expect(page.locator("#guided-reason")).to_have_text(
                say(lang, "guided.reason_start")
            )
        await screenshot(b, f"together-ready-{lang}")

        # -- either runs the room: a starts, each cues, b pauses, a resumes --------------
        await a.get_by_role("button", name=start).click()
        await expect_state(both, "recording", say(lang, "rec.recording"))
        begun = time.monotonic()
        await a.get_by_role("button", name=say(lang, "guided.first")).click()
        for page in both:
            await expect(page.locator("#cue-text")).to_have_text(bank_text(0, lang))
        await b.get_by_role("button", name=say(lang, "guided.next")).click()
        for page in both:
            await expect(page.locator("#cue-text")).to_have_text(bank_text(1, lang))
        await expect(a.locator("#cue-announcer")).to_have_text(
            say(lang, "live.cue_announce", question=bank_text(1, lang))
        )
        q4 = bank_text(4, lang)
        await b.get_by_role("button", name=say(lang, "guided.ask_label", question=q4)).click()
        for page in both:
            await expect(page.locator("#cue-text")).to_have_text(q4)
            await expect(page.locator("#guided-bank .bank-item.current .bank-text")).to_have_text(
                q4
            )
        await assert_hears(a, ["b"])
        await assert_hears(b, ["a"])

        await b.get_by_role("button", name=say(lang, "guided.pause")).click()
        await expect_state(both, "paused", say(lang, "rec.paused"))
        await a.get_by_role("button", name=say(lang, "guided.marker")).click()
        await expect(a.locator("#guided-status")).to_contain_text(
            say(lang, "markers.added").split("{time}")[0]
        )
        await a.get_by_role("button", name=say(lang, "guided.resume")).click()
        await expect_state(both, "recording", say(lang, "rec.recording"))
        await screenshot(a, f"together-live-{lang}")

        live = server.services.rooms.live(session_id)
        assert live is not None and live.recording is not None
        recording_id = live.recording.id
        await wait_for(
            lambda: live.elapsed() >= TALK_S, timeout=TALK_S + 30, what=f"{TALK_S} s recorded"
        )

        # -- stop, after confirming (b keeps it going once, then stops) -----------------------
        stop = say(lang, "guided.stop")
        await b.get_by_role("button", name=stop).click()
        dialog = b.get_by_role("dialog", name=say(lang, "guided.stop_title"))
        await expect(dialog).to_be_visible()
        await dialog.get_by_role("button", name=say(lang, "guided.stop_cancel")).click()
        await expect(dialog).to_have_count(0)
        await expect_state(both, "recording", say(lang, "rec.recording"))
        await b.get_by_role("button", name=stop).click()
        await (
            b.get_by_role("dialog")
            .get_by_role("button", name=say(lang, "guided.stop_confirm"))
            .click()
        )
        await expect_state(both, "stopped", say(lang, "rec.stopped"))
        stopped = time.monotonic()
        for page, name in ((a, "Rosa"), (b, "Dale")):
            await expect(page.locator("#ended-title")).to_have_text(
                say(lang, "ended.title_name", name=name)
            )
            await expect(page.locator("#guided-controls")).to_be_hidden()
        await screenshot(a, f"together-end-{lang}")
        for seat in seats.values():
            seat.watch.assert_clean()

    # -- finalized like a facilitated take: a stem per voice, a chapter per question ---------
    rec = await finalized(server.url, recording_id)
    names = {f["name"] for f in rec["files"]}
    assert {"stems/a.flac", "stems/b.flac", "master.wav", "chapters.vtt"} <= names
    assert not any("facilitator" in name for name in names)
    assert [c["title"] for c in rec["chapters"]] == [
        bank_text(0, lang),
        bank_text(1, lang),
        q4,
    ]
    assert TALK_S <= rec["duration_s"] <= stopped - begun + 1
    metadata = json.loads(
        (server.settings.recordings_dir / recording_id / "metadata.json").read_text()
    )
    assert metadata["kind"] == "self_guided"
    assert metadata["language"] == lang
    assert [m["kind"] for m in metadata["markers"]].count("marker") == 1


async def test_staff_create_a_self_guided_session(server: RunningServer, chromium: Any) -> None:
    browser = await chromium(523.0)
    await add_staff(server)
    async with watched_page(browser, f"{server.url}/staff") as (page, watch):
        await sign_in_as_staff(page)
        await page.get_by_label("Title").fill("Kitchen table")
        await expect(page.get_by_role("group", name="Facilitator")).to_be_visible()
        await page.get_by_label("Conversation").select_option("self_guided")
        await expect(page.get_by_role("group", name="Facilitator")).to_be_hidden()
        for legend, name in (("Participant A", "Rosa"), ("Participant B", "Lupe")):
            await page.get_by_role("group", name=legend).get_by_label("First name only").fill(name)
        await page.get_by_role("button", name="Create session").click()

        links = page.locator("#link-list .link-input")
        await expect(links).to_have_count(2)
        for i in range(2):
            value = await links.nth(i).input_value()
            assert value.startswith(f"{server.url}/together/ses_") and "#token=" in value
        row = page.locator("#sessions-body tr")
        await expect(row.locator("th")).to_contain_text("Kitchen table")
        await expect(row.locator("th .tag")).to_have_text("self-guided")
        await expect(row.locator("[data-reissue]")).to_have_count(2)
        # the form is back to a facilitated session for the next one
        await expect(page.get_by_role("group", name="Facilitator")).to_be_visible()

        participant = SeatClient(server.url, token_of(await links.nth(0).input_value()))
        await participant.connect()
        try:
            await expect(row).to_contain_text("1 of 2: Participant A", timeout=EXPECT_MS)
        finally:
            await participant.close()
        await screenshot(page, "staff-self-guided")
        watch.assert_clean()


async def test_an_invitation_from_the_published_page_opens_a_room(
    tmp_path: Path, chromium: Any
) -> None:
    browser = await chromium(523.0)
    async with serving(tmp_path / "data", self_guided_invites="on") as srv:
        async with watched_page(browser, f"{srv.url}/invitar", PHONE) as (page, watch):
            await expect(page.locator("html")).to_have_attribute("lang", "es")
            you = page.get_by_role("group", name=say("es", "invite.you"))
            await you.get_by_label(say("es", "invite.first_name")).fill("Rosa")
            await you.get_by_label(say("es", "invite.email")).fill("rosa@example.org")
            partner = page.get_by_role("group", name=say("es", "invite.partner"))
            await partner.get_by_label(say("es", "invite.first_name")).fill("Lupe")
            await partner.get_by_label(say("es", "invite.email")).fill("ROSA@example.org")
            await page.get_by_role("button", name=say("es", "invite.send")).click()
            await expect(page.locator("#invite-status")).to_have_text(say("es", "error.same_email"))
            # Chromium logs that refused request (400) as a console error: it was expected
            assert [e for e in watch.errors if "status of 400" not in e] == []
            watch.errors.clear()
            await partner.get_by_label(say("es", "invite.email")).fill("lupe@example.org")
            await page.get_by_role("button", name=say("es", "invite.send")).click()
            await expect(page.locator("#invite-status")).to_have_text(
                say("es", "invite.check_email", email="rosa@example.org")
            )
            await expect(page.locator("#invite-form")).to_be_hidden()
            await screenshot(page, "invite-sent-es")
            watch.assert_clean()

        sent = await wait_for(
            lambda: outbox_messages(srv.settings.outbox_dir), what="the confirmation"
        )
        confirm = re.search(r"http://\S+/invite#token=[A-Za-z0-9_-]+", plain_text(sent[0]))
        assert confirm is not None
        async with watched_page(browser, confirm.group(0), PHONE, locale="es-ES") as (page, watch):
            await expect(page.locator("#invite-status")).to_have_text(say("es", "invite.confirmed"))
            assert "token" not in page.url  # taken out of the address bar
            await page.get_by_role("link", name=say("es", "invite.open_room")).click()
            await expect(page).to_have_url(re.compile(r"/together/ses_[0-9a-f]+"))
            await expect(page.locator("#guided-intro-title")).to_have_text(
                say("es", "guided.intro_title")
            )
            await page.get_by_role("button", name=say("es", "guided.join")).click()
            await expect(page.locator("#welcome-title")).to_have_text(
                say("es", "welcome.hello", name="Rosa")
            )
            await expect(page.locator("#partner-name")).to_have_text("Lupe")
            watch.assert_clean()
