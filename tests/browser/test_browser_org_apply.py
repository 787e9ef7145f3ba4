"""An organisation's own application form in real Chromium, in English at
`/apply/{slug}` and in Spanish at `/solicitar/{slug}`: it says whose programme it is (as
text), and what is sent is filed under that organisation; a form address that names no
organisation says so and takes nothing."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from storyroom.matching.applications import ApplicationFilter
from storyroom.orgs import DEFAULT_ORG_ID, EVERY_ORGANISATION, OrgScope
from support.apply_form import agree_and_send, choose_window, form_page
from support.browser import PHONE, horizontal_overflow
from support.server import RunningServer, call

pytestmark = pytest.mark.slow

NAME = "Radio Ribereña <b>& friends</b>"  # markup in a name stays text
CONTACT = "help@riverside.example.org · 555 0100"
PAGES = {
    "en": {
        "path": "/apply/riverside",
        "programme": f"A One Small Step programme of {NAME}",
        "contact": f"Contact: {CONTACT}",
        "unknown": "We could not find this organisation's form. "
        "Please check the address you were given.",
    },
    "es": {
        "path": "/solicitar/riverside",
        "programme": f"Un programa One Small Step de {NAME}",
        "contact": f"Contacto: {CONTACT}",
        "unknown": "No encontramos el formulario de esta organización. "
        "Revise la dirección que le dieron.",
    },
}
FIELDS = {
    "en": {
        "first": "First name",
        "last": "Last name",
        "email": "Email",
        "city": "City or town",
        "state": "State",
        "zone": "Time zone",
        "speaks": "English",
        "placement": "Liberal",
        "bio": "A short introduction of yourself",
        "day": "Tuesday",
        "send": "Send my application",
        "done": "Thank you, Eve. We received your application.",
    },
    "es": {
        "first": "Nombre",
        "last": "Apellido",
        "email": "Correo electrónico",
        "city": "Ciudad o pueblo",
        "state": "Estado",
        "zone": "Zona horaria",
        "speaks": "Español",
        "placement": "Muy conservador",
        "bio": "Una breve presentación de usted",
        "day": "Martes",
        "send": "Enviar mi solicitud",
        "done": "Gracias, Eve. Recibimos su solicitud.",
    },
}


async def riverside(server: RunningServer) -> int:
    async with aiohttp.ClientSession() as http:
        org = await call(
            http,
            "POST",
            f"{server.url}/api/organisations",
            {"slug": "riverside", "name": NAME, "contact": CONTACT},
            expect=201,
        )
    return int(org["id"])


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_an_organisations_own_form(
    server: RunningServer, browser: Browser, lang: str
) -> None:
    org_id = await riverside(server)
    words, label = PAGES[lang], FIELDS[lang]
    async with form_page(browser, server.url + words["path"], PHONE) as (page, watch):
        await expect(page.locator("html")).to_have_attribute("lang", lang)
        slot = page.locator("#organisation")
        await expect(slot.locator(".org-name")).to_have_text(words["programme"])
        await expect(slot.locator(".org-contact")).to_have_text(words["contact"])
        await expect(slot.locator("b")).to_have_count(0)
        assert await horizontal_overflow(page) == 0
        await page.get_by_label(label["first"], exact=True).fill("Eve")
        await page.get_by_label(label["last"]).fill("Adams")
        await page.get_by_label(label["email"], exact=True).fill("eve@example.org")
        await page.get_by_label(label["city"]).fill("Austin")
        await page.get_by_label(label["state"]).select_option("TX")
        await page.get_by_label(label["zone"]).select_option("America/Chicago")
        await page.get_by_label(label["speaks"]).check()
        await page.get_by_label(label["placement"], exact=True).check()
        await page.get_by_label(label["bio"]).fill("Librarian who runs a chess club.")
        await choose_window(page, label["day"], "18:00", "21:00", lang=lang)
        await agree_and_send(page, lang=lang)
        await expect(page.locator("#done-body")).to_have_text(label["done"])
        watch.assert_clean()
    store = server.services.applications
    [row] = await store.list_applications(ApplicationFilter(), EVERY_ORGANISATION)
    assert (row.first_name, row.org_id, row.language) == ("Eve", org_id, lang)
    assert await store.list_applications(ApplicationFilter(), OrgScope(DEFAULT_ORG_ID)) == []


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_a_form_of_no_organisation(
    server: RunningServer, browser: Browser, lang: str
) -> None:
    await riverside(server)
    path = PAGES[lang]["path"].replace("riverside", "nowhere")

    async with form_page(browser, server.url + path, PHONE) as (page, watch):
        await expect(page.locator("#organisation")).to_have_text(PAGES[lang]["unknown"])
        await expect(page.locator("#apply-form")).to_be_hidden()
        # the page's one lookup of the organisation was answered 404: nothing else failed
        watch.errors = [e for e in watch.errors if "status of 404" not in e]
        watch.assert_clean()
    store = server.services.applications
    assert await store.list_applications(ApplicationFilter(), EVERY_ORGANISATION) == []
