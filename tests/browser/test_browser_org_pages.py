"""A participant's room page in real Chromium says whose programme the conversation is
(the organisation's name and contact line, as text, in the page's language); a session
of the default organisation, which has no name, shows nothing new."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from storyroom.__main__ import demo_session
from storyroom.staff.accounts import Role
from support.browser import PHONE, seat_page, with_raw_audio
from support.server import RunningServer, create_session
from support.staff import StaffBrowser, cookie_session

pytestmark = pytest.mark.slow

PASSWORD = "a long enough password for tests"
NAME = "Hilltop <i>College</i>"
CONTACT = "oss@hilltop.example.edu"


async def hilltop_session(server: RunningServer) -> dict[str, str]:
    """A Spanish session made by Hilltop College's admin: seat a's join link."""
    org = await server.services.store.add_organisation("hilltop", NAME, None, CONTACT, {})
    await server.services.accounts.add_user(
        "admin@hilltop.example.edu", PASSWORD, org.id, Role.ADMIN
    )
    admin = StaffBrowser(cookie_session(), server.url)
    try:
        assert (await admin.sign_in("admin@hilltop.example.edu", PASSWORD))[0] == 200
        created = await admin.call("POST", "/api/sessions", demo_session(language="es"), expect=201)
    finally:
        await admin.http.close()
    return {"url": created["seats"]["a"]["url"]}


async def test_the_room_says_whose_programme_it_is(server: RunningServer, browser: Browser) -> None:
    session = await hilltop_session(server)
    async with seat_page(browser, with_raw_audio(session["url"]), "a", PHONE) as seat:
        page = seat.page
        slot = page.locator("#organisation")
        await expect(page.locator("html")).to_have_attribute("lang", "es")
        await expect(slot.locator(".org-name")).to_have_text(
            f"Un programa One Small Step de {NAME}"
        )
        await expect(slot.locator(".org-contact")).to_have_text(f"Contacto: {CONTACT}")
        await expect(slot.locator("i")).to_have_count(0)  # markup in a name stays text
        await page.get_by_label("Idioma").select_option("en")
        await expect(slot.locator(".org-name")).to_have_text(
            f"A One Small Step programme of {NAME}"
        )
        await expect(slot.locator(".org-contact")).to_have_text(f"Contact: {CONTACT}")
        seat.watch.assert_clean()


async def test_the_default_organisation_shows_nothing_new(
    server: RunningServer, browser: Browser
) -> None:
    created = await create_session(server.url)
    async with seat_page(browser, with_raw_audio(created["seats"]["a"]["url"]), "a", PHONE) as seat:
        await expect(seat.page.locator("#welcome-title")).to_have_text("Welcome, Rosa")
        await expect(seat.page.locator("#organisation")).to_be_hidden()
        await expect(seat.page.locator("#organisation > *")).to_have_count(0)
        seat.watch.assert_clean()
