"""Single pages in real Chromium: Spanish, refused links, phone width, the facilitator's
keyboard, and the staff pages. Participants are real Socket.IO clients where their
browser is not the point of the test."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, expect

from storyroom.room.questions import bank
from support.browser import (
    EXPECT_MS,
    LAPTOP,
    PHONE,
    bank_text,
    horizontal_overflow,
    screenshot,
    seat_page,
    sign_in_as_staff,
    token_of,
    turn_on_microphone,
    with_raw_audio,
)
from support.polling import wait_for
from support.server import (
    RunningServer,
    SeatClient,
    create_session,
    give_consent,
    seated,
    serving,
)
from support.staff import add_staff

pytestmark = pytest.mark.slow


async def test_spanish_session_speaks_spanish_and_switches(
    server: RunningServer, browser: Browser
) -> None:
    created = await create_session(server.url, language="es")
    link = with_raw_audio(created["seats"]["a"]["url"])
    async with seat_page(browser, link, "a", PHONE) as seat:
        page = seat.page
        await expect(page.locator("html")).to_have_attribute("lang", "es")
        await expect(page.locator("#welcome-title")).to_have_text("Te damos la bienvenida, Rosa")
        await expect(page.locator("#rec-indicator")).to_have_text("Todavía no se graba")
        await expect(page.get_by_role("checkbox", name=bank_text(0, "es"))).to_be_visible()
        await expect(page.get_by_label("Grabar esta conversación")).to_be_visible()
        await expect(page.get_by_role("button", name="Guardar mis respuestas")).to_be_visible()
        await turn_on_microphone(page)
        await expect(page.locator("[data-role=status]")).to_have_text(
            "Tu micrófono está encendido."
        )
        await screenshot(page, "room-es")

        await page.get_by_label("Idioma").select_option("en")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.locator("#welcome-title")).to_have_text("Welcome, Rosa")
        await expect(page.get_by_role("checkbox", name=bank_text(0, "en"))).to_be_visible()
        await expect(page.locator("[data-role=status]")).to_have_text("Your microphone is on.")

        # the choice is remembered for this session
        await page.reload()
        await expect(page.locator("#welcome-title")).to_have_text("Welcome, Rosa")
        await page.get_by_label("Language").select_option("es")
        await expect(page.locator("#welcome-title")).to_have_text("Te damos la bienvenida, Rosa")
        seat.watch.assert_clean()

    facilitator = with_raw_audio(created["seats"]["facilitator"]["url"])
    async with seat_page(browser, facilitator, "facilitator", LAPTOP) as seat:
        await expect(seat.page.get_by_role("button", name="Empezar a grabar")).to_be_visible()
        await expect(seat.page.locator("#start-hint")).to_have_text(
            "Esperando a que entre: Rosa, Dale."
        )
        seat.watch.assert_clean()


async def test_a_bad_link_says_so_in_plain_words(
    server: RunningServer, browser: Browser, tmp_path: Path
) -> None:
    created = await create_session(server.url)
    room = urlsplit(created["seats"]["a"]["url"]).path
    cases = [
        (f"{server.url}{room}#token={'x' * 32}", "This link does not work."),
        (f"{server.url}{room}", "This link is missing its key."),
    ]
    for url, words in cases:
        async with seat_page(browser, url, "a", PHONE) as seat:
            await expect(seat.page.locator("#banner")).to_be_visible(timeout=EXPECT_MS)
            await expect(seat.page.locator("#banner-text")).to_contain_text(words)
            await expect(seat.page.locator("#main")).to_be_hidden()
            seat.watch.assert_clean()

    # an expired link (tokens that live for a tenth of a second)
    async with serving(tmp_path / "short", token_ttl_days=1e-6) as short:
        expired = await create_session(short.url)
        async with seat_page(browser, expired["seats"]["b"]["url"], "b", PHONE) as seat:
            await expect(seat.page.locator("#banner-text")).to_have_text(
                "This link has expired. Please ask the organisers for a new one.",
                timeout=EXPECT_MS,
            )
            await expect(seat.page.locator("#conn-indicator")).to_have_text("Cannot connect")
            await screenshot(seat.page, "room-expired")


async def test_a_second_window_takes_over_and_leaving_can_be_undone(
    server: RunningServer, browser: Browser
) -> None:
    created = await create_session(server.url)
    link = with_raw_audio(created["seats"]["a"]["url"])
    async with seat_page(browser, link, "first", PHONE) as first:
        await expect(first.page.locator("#conn-indicator")).to_have_attribute(
            "data-state", "connected", timeout=EXPECT_MS
        )
        async with seat_page(browser, link, "second", PHONE) as second:
            await expect(second.page.locator("#conn-indicator")).to_have_attribute(
                "data-state", "connected", timeout=EXPECT_MS
            )
            await expect(first.page.locator("#banner-text")).to_have_text(
                "You opened this conversation in another window, so this window was disconnected.",
                timeout=EXPECT_MS,
            )
            await expect(first.page.locator("#conn-indicator")).to_have_text("Disconnected")
            # the first window takes the seat back
            await first.page.get_by_role("button", name="Use this window instead").click()
            await expect(first.page.locator("#conn-indicator")).to_have_attribute(
                "data-state", "connected", timeout=EXPECT_MS
            )
            await expect(second.page.locator("#banner-text")).to_contain_text(
                "another window", timeout=EXPECT_MS
            )

        # leaving asks first, then offers to rejoin
        page = first.page
        await page.get_by_role("button", name="Leave").click()
        dialog = page.get_by_role("dialog", name="Leave the conversation?")
        await dialog.get_by_role("button", name="Leave").click()
        await expect(page.locator("#banner-text")).to_have_text("You left the conversation.")
        await expect(page.locator("#conn-indicator")).to_have_text("You left")
        room = server.services.rooms.live(created["id"])
        assert room is not None
        await wait_for(lambda: not room.connected("a"), what="the seat to empty")
        await page.get_by_role("button", name="Rejoin").click()
        await expect(page.locator("#conn-indicator")).to_have_attribute(
            "data-state", "connected", timeout=EXPECT_MS
        )
        await expect(page.locator("#banner")).to_be_hidden()
        first.watch.assert_clean()

    # a facilitator's link opened on the participants' page lands on the console
    wrong = created["seats"]["facilitator"]["url"].replace("/console/", "/room/")
    async with seat_page(browser, wrong, "facilitator", LAPTOP) as seat:
        await expect(seat.page).to_have_url(created["seats"]["facilitator"]["url"])
        await expect(seat.page.get_by_role("button", name="Start recording")).to_be_visible()


async def test_pages_fit_a_phone_without_sideways_scrolling(
    server: RunningServer, browser: Browser
) -> None:
    created = await create_session(
        server.url,
        title="A conversation with a rather long title that must wrap on a small phone",
        participants=[
            {"name": "Maximiliana", "bio": "Retired schoolteacher " * 12},
            {"name": "Bartholomew", "bio": "Long-haul trucker and volunteer firefighter."},
        ],
    )
    await add_staff(server)
    pages = {
        "a": with_raw_audio(created["seats"]["a"]["url"]),
        "facilitator": with_raw_audio(created["seats"]["facilitator"]["url"]),
        "staff": f"{server.url}/staff",
        "index": f"{server.url}/",
    }
    for name, url in pages.items():
        async with seat_page(browser, url, name, PHONE) as seat:
            if name == "index":
                await expect(
                    seat.page.get_by_role("link", name="Staff: sign in here")
                ).to_be_visible()
            elif name == "staff":
                await sign_in_as_staff(seat.page)
                await expect(seat.page.locator("#sessions-body tr")).to_have_count(1)
            else:
                await expect(seat.page.locator("#conn-indicator")).to_have_attribute(
                    "data-state", "connected", timeout=EXPECT_MS
                )
                await turn_on_microphone(seat.page)
            assert await horizontal_overflow(seat.page) == 0, f"{name} scrolls sideways"
            await screenshot(seat.page, f"phone-{name}")
            seat.watch.assert_clean()


async def test_the_facilitator_runs_the_room_from_the_keyboard(
    tmp_path: Path, browser: Browser
) -> None:
    # a 10-minute session that is inside its last 10 minutes at once: the warning shows
    async with serving(tmp_path / "data", warning_minutes=(10.0, 1.0)) as server:
        created = await create_session(server.url, target_minutes=10)
        async with seated(server.url, created, ("a", "b")) as participants:
            await give_consent(participants)
            q = [bank()["questions"][i]["id"] for i in range(3)]
            texts = [bank_text(i) for i in range(3)]
            link = with_raw_audio(created["seats"]["facilitator"]["url"])
            async with seat_page(browser, link, "facilitator", LAPTOP) as seat:
                page = seat.page
                await expect(page.locator("#start-hint")).to_have_text(
                    "Everyone is here and has agreed to the recording. You can start.",
                    timeout=EXPECT_MS,
                )
                # build the agreed list with Enter on focused buttons
                for count, text in enumerate(texts, start=1):
                    button = page.get_by_role("button", name=f"Add to the agreed list: {text}")
                    await button.focus()
                    await page.keyboard.press("Enter")
                    await expect(page.locator("#agreed-editor .agreed-text")).to_have_count(count)
                await expect(page.locator("#agreed-editor .agreed-text")).to_have_text(texts)
                # Enter on a focused Move button moves the question; focus stays on the
                # moved question's button, and at the top (Up disabled) goes to its Down
                await page.get_by_role("button", name=f"Move up: {texts[2]}").focus()
                for focused, order in (
                    ("Move up", [texts[0], texts[2], texts[1]]),
                    ("Move up", [texts[2], texts[0], texts[1]]),
                    ("Move down", [texts[0], texts[2], texts[1]]),
                ):
                    button = page.get_by_role("button", name=f"{focused}: {texts[2]}")
                    await expect(button).to_be_focused()
                    await page.keyboard.press("Enter")
                    await expect(page.locator("#agreed-editor .agreed-text")).to_have_text(order)
                await participants["a"].wait(lambda s: s["agreed"] == [q[0], q[2], q[1]])

                await page.get_by_role("button", name="Start recording").focus()
                await page.keyboard.press("Enter")
                await expect(page.locator("#rec-indicator")).to_have_attribute(
                    "data-state", "recording", timeout=EXPECT_MS
                )
                await expect(page.get_by_role("button", name="Pause")).to_be_focused()
                await expect(page.locator("#timer-warning")).to_have_text("About 10 minutes left.")
                await expect(page.locator("#timer")).to_have_attribute("data-state", "warning")

                # N cues the next agreed question, twice
                await expect(page.locator("#next-preview")).to_have_text(f"Up next: {texts[0]}")
                await page.keyboard.press("n")
                await expect(page.locator("#cue-text")).to_have_text(texts[0])
                await expect(page.locator("#next-preview")).to_have_text(f"Up next: {texts[2]}")
                await participants["b"].wait(lambda s: s["cue"] and s["cue"]["question_id"] == q[0])
                await page.keyboard.press("n")
                await expect(page.locator("#cue-text")).to_have_text(texts[2])
                await expect(page.locator("#agreed-editor li.current .agreed-text")).to_have_text(
                    texts[2]
                )
                # typing an "n" into a field does not cue anything
                await page.get_by_label("Label").focus()
                await page.keyboard.type("nice moment")
                await page.keyboard.press("Enter")
                await expect(page.locator("#marker-list li")).to_contain_text(["nice moment"])
                await expect(page.locator("#cue-text")).to_have_text(texts[2])
                assert len(participants["a"].last["cues"]) == 2

                # Stop asks first; Escape keeps recording
                await page.get_by_role("button", name="Stop recording").focus()
                await page.keyboard.press("Enter")
                dialog = page.get_by_role("dialog", name="Stop the recording?")
                await expect(dialog).to_be_visible()
                await expect(dialog.get_by_role("button", name="Keep recording")).to_be_focused()
                await page.keyboard.press("Escape")
                await expect(dialog).to_have_count(0)
                await expect(page.get_by_role("button", name="Stop recording")).to_be_focused()
                await expect(page.locator("#rec-indicator")).to_have_attribute(
                    "data-state", "recording"
                )
                await page.keyboard.press("Enter")
                await page.keyboard.press("Tab")
                await expect(page.get_by_role("button", name="Yes, stop recording")).to_be_focused()
                await page.keyboard.press("Enter")
                await expect(page.locator("#rec-indicator")).to_have_attribute(
                    "data-state", "stopped", timeout=EXPECT_MS
                )
                await participants["a"].wait(lambda s: s["recording"]["state"] == "stopped")
                seat.watch.assert_clean()


async def test_staff_sign_in_create_a_session_and_watch_the_list(
    server: RunningServer, browser: Browser
) -> None:
    context = await browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    participant: SeatClient | None = None
    try:
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        await add_staff(server)
        page = await context.new_page()
        await page.goto(f"{server.url}/staff")
        await expect(page).to_have_url(f"{server.url}/staff/signin?next=/staff")
        await sign_in_as_staff(page, password="not-the-staff-password")
        await expect(page.locator("#sign-in-status")).to_have_text(
            "That email and password do not match an account."
        )

        await sign_in_as_staff(page)
        await expect(page.locator("#sessions-status")).to_have_text("No sessions yet.")
        await page.get_by_label("Title").focus()

        await page.get_by_label("Title").fill("Evening conversation")
        create = page.get_by_role("region", name="Create a session")
        await create.get_by_label("Language").select_option("es")
        await page.get_by_label("Planned length (minutes)").fill("45")
        for legend, name, bio in (
            ("Participant A", "Rosa", "Enfermera de El Paso."),
            ("Participant B", "Dale", "Retired machinist from Ohio."),
        ):
            group = page.get_by_role("group", name=legend)
            await group.get_by_label("First name only").fill(name)
            await group.get_by_label("Short bio").fill(bio)
        await (
            page.get_by_role("group", name="Facilitator")
            .get_by_label("First name only")
            .fill("Sam")
        )
        await page.get_by_role("button", name="Create session").click()

        links = page.locator("#link-list .link-input")
        await expect(links).to_have_count(3)
        await expect(page.locator("#links")).to_be_focused()
        values = [await links.nth(i).input_value() for i in range(3)]
        assert values[0].startswith(f"{server.url}/room/ses_") and "#token=" in values[0]
        assert values[1].startswith(f"{server.url}/room/ses_") and values[1] != values[0]
        assert values[2].startswith(f"{server.url}/console/ses_")
        await expect(page.get_by_label("Participant A — Rosa")).to_have_value(values[0])
        await page.get_by_role("button", name="Copy Dale's link").click()
        await expect(page.locator('.link-item[data-seat="b"] .copy-status')).to_have_text("Copied.")
        assert await page.evaluate("() => navigator.clipboard.readText()") == values[1]

        row = page.locator("#sessions-body tr")
        await expect(row).to_have_count(1)
        await expect(row.locator("th")).to_contain_text("Evening conversation")
        await expect(row).to_contain_text("Español")
        await expect(row).to_contain_text("Not recording yet")
        await expect(row).to_contain_text("Nobody")

        # the list follows the room by itself
        participant = SeatClient(server.url, token_of(values[0]))
        await participant.connect()
        await expect(row).to_contain_text("1 of 3: Participant A", timeout=EXPECT_MS)

        await screenshot(page, "staff")

        # still signed in (the session cookie), links still there after a reload
        # (sessionStorage); sign out
        await page.reload()
        await expect(page.locator("#sessions-body tr")).to_have_count(1)
        await expect(page.locator("#link-list .link-input")).to_have_count(3)
        await expect(page.locator("#sessions-status")).to_have_text(
            "1 session. This list updates by itself."
        )
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_label("Email")).to_be_visible()
        assert await page.evaluate("() => sessionStorage.length") == 0
        await page.goto(f"{server.url}/staff")
        await expect(page.get_by_label("Email")).to_be_visible()
    finally:
        if participant is not None:
            await participant.close()
        with contextlib.suppress(Exception):
            await context.close()
