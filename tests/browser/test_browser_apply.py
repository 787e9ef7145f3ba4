"""The application form and the staff matching page in real Chromium: apply on a phone in
English and in Spanish (field messages, nothing typed lost, confirmation), the keyboard
path, and staff matching, planning and confirming a pair in a few clicks."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from support.apply import application
from support.apply_form import agree_and_send, choose_window, form_page
from support.browser import (
    LAPTOP,
    PHONE,
    horizontal_overflow,
    screenshot,
    sign_in_as_staff,
)
from support.server import RunningServer, call
from support.staff import STAFF_EMAIL, add_staff

pytestmark = pytest.mark.slow


async def stored(server: RunningServer) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        rows = (await call(http, "GET", f"{server.url}/api/applications"))["applications"]
        return [await call(http, "GET", f"{server.url}/api/applications/{r['id']}") for r in rows]


async def test_apply_in_english_on_a_phone(server: RunningServer, browser: Browser) -> None:
    async with form_page(browser, f"{server.url}/apply", PHONE) as (page, watch):
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Talk with someone who sees politics differently"
        )
        assert await horizontal_overflow(page) == 0

        # sending an empty form names what is missing and moves focus to the summary
        await page.get_by_role("button", name="Send my application").click()
        summary = page.locator("#error-summary")
        await expect(summary).to_be_visible()
        await expect(summary).to_be_focused()
        await expect(page.locator("#e-first_name")).to_have_text("Please fill this in.")
        await expect(page.locator("#e-placement")).to_have_text(
            "Please choose one point on the scale."
        )
        await expect(page.get_by_label("First name")).to_have_attribute("aria-invalid", "true")

        await page.get_by_label("First name").fill("Rosa")
        await page.get_by_label("Last name").fill("Delgado")
        await page.get_by_label("Email", exact=True).fill(
            "rosa@example"
        )  # the server will refuse this
        await page.get_by_label("Phone (optional)").fill("+1 915 555 0100")
        await page.get_by_label("City or town").fill("El Paso")
        await page.get_by_label("State").select_option("TX")
        await page.get_by_label("Time zone").select_option("America/Denver")
        await page.get_by_label("English").check()
        await page.get_by_label("Español").check()
        await page.get_by_label("Liberal", exact=True).check()
        await page.get_by_label("A short introduction of yourself").fill(
            "Nurse, mother of two, Little League coach."
        )
        await choose_window(page, "Tuesday", "18:00", "21:00")
        await page.get_by_role("button", name="Add another time").click()
        await expect(page.locator(".window-row")).to_have_count(2)
        second = page.locator(".window-row").nth(1)
        await expect(second.get_by_label("Day")).to_be_focused()
        await choose_window(second, "Saturday", "10:00", "13:00")
        await agree_and_send(page)

        # the server's field message shows beside the field; everything typed is kept
        await expect(page.locator("#e-email")).to_have_text(
            "Please enter an email address like name@example.com."
        )
        await expect(page.locator("#e-first_name")).to_be_hidden()
        await expect(page.get_by_label("First name")).to_have_value("Rosa")
        await expect(page.get_by_label("A short introduction of yourself")).to_have_value(
            "Nurse, mother of two, Little League coach."
        )
        await expect(page.get_by_label("State")).to_have_value("TX")
        await expect(page.locator(".window-row")).to_have_count(2)
        await expect(page.get_by_label("You may contact me")).to_be_checked()
        assert await stored(server) == []
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "apply-phone-errors")

        await page.get_by_label("Email", exact=True).fill("rosa@example.org")
        await page.get_by_role("button", name="Send my application").click()
        done = page.locator("#done")
        await expect(done).to_be_visible()
        await expect(done).to_be_focused()
        await expect(page.locator("#done-body")).to_have_text(
            "Thank you, Rosa. We received your application."
        )
        await screenshot(page, "apply-phone-done")

        [row] = await stored(server)
        assert row["first_name"] == "Rosa" and row["email"] == "rosa@example.org"
        assert row["region"] == "TX" and row["time_zone"] == "America/Denver"
        assert row["speaks"] == ["en", "es"]
        assert row["language"] == "en" and row["placement"] == 2
        assert row["availability"] == [
            {"day": 1, "start": "18:00", "end": "21:00"},
            {"day": 5, "start": "10:00", "end": "13:00"},
        ]
        watch.assert_clean()


async def test_apply_in_spanish(server: RunningServer, browser: Browser) -> None:
    async with form_page(browser, f"{server.url}/solicitar", PHONE) as (page, watch):
        await expect(page.locator("html")).to_have_attribute("lang", "es")
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Converse con alguien que ve la política de otra manera"
        )
        await page.get_by_label("Nombre", exact=True).fill("Ana")
        await page.get_by_label("Apellido").fill("Ruiz")
        await page.get_by_label("Correo electrónico").fill("ana@example.org")
        await page.get_by_label("Ciudad o pueblo").fill("San Juan")
        await page.get_by_label("Estado").select_option(label="Puerto Rico")
        await page.get_by_label("Zona horaria").select_option("America/Puerto_Rico")
        await page.get_by_label("Español").check()
        await page.get_by_label("Muy conservador").check()
        await page.get_by_label("Una breve presentación de usted").fill("Soy Ana Ruiz, maestra.")
        await choose_window(page, "Domingo", "15:00", "17:00", lang="es")
        await agree_and_send(page, lang="es")
        # the last name in the introduction is caught by the server, in Spanish
        await expect(page.locator("#e-bio")).to_have_text(
            "No incluya su apellido en su presentación."
        )
        await page.get_by_label("Una breve presentación de usted").fill("Maestra de primaria.")
        await page.get_by_role("button", name="Enviar mi solicitud").click()
        await expect(page.locator("#done-body")).to_have_text(
            "Gracias, Ana. Recibimos su solicitud."
        )
        [row] = await stored(server)
        assert row["language"] == "es" and row["speaks"] == ["es"] and row["region"] == "PR"
        assert row["availability"] == [{"day": 6, "start": "15:00", "end": "17:00"}]
        watch.assert_clean()


async def test_the_form_by_keyboard(server: RunningServer, browser: Browser) -> None:
    async with form_page(browser, f"{server.url}/apply", LAPTOP) as (page, watch):
        focused: list[str] = []
        for _ in range(60):
            await page.keyboard.press("Tab")
            focused.append(
                await page.evaluate(
                    "() => document.activeElement.id || document.activeElement.tagName"
                )
            )
        assert "f-website" not in focused  # the honeypot is out of the tab order
        for wanted in (
            "f-first_name",
            "f-email",
            "f-region",
            "f-speaks-en",
            "f-bio",
            "add-window",
            "submit",
        ):
            assert wanted in focused, wanted
        # the language switch works from the keyboard and keeps what was typed
        await page.get_by_label("First name").fill("Rosa")
        await page.get_by_label("Language", exact=True).select_option("es")
        await expect(page.get_by_label("Nombre", exact=True)).to_have_value("Rosa")
        watch.assert_clean()


async def test_staff_match_plan_and_confirm_in_a_few_clicks(
    server: RunningServer, browser: Browser
) -> None:
    async with aiohttp.ClientSession() as http:
        for person in (
            application(first_name="Rosa", region="TX", time_zone="America/Chicago", placement=2),
            application(
                first_name="Dale",
                last_name="Kowalski",
                email="dale@example.org",
                region="OK",
                time_zone="America/Chicago",
                placement=6,
                speaks=["en"],
            ),
        ):
            await call(
                http, "POST", f"{server.url}/api/applications", person, staff=False, expect=201
            )
    await add_staff(server)
    async with form_page(browser, f"{server.url}/staff/applications", LAPTOP, False) as (
        page,
        watch,
    ):
        # like every staff page, it asks for a sign-in first and comes back after it
        await expect(page).to_have_url(f"{server.url}/staff/signin?next=/staff/applications")
        await sign_in_as_staff(page)
        await expect(page).to_have_url(f"{server.url}/staff/applications")
        await expect(page.locator("#signed-in-as")).to_have_text(STAFF_EMAIL)
        await expect(page.locator("#applications-status")).to_have_text("2 applications")
        await page.get_by_role("button", name="Rosa Delgado").click()
        await expect(page.locator("#detail")).to_be_focused()
        await expect(page.locator("#detail-list")).to_contain_text("rosa@example.org")
        await page.get_by_role("button", name="Close").click()

        # a facilitator for the roster
        form = page.locator("#facilitator-form")
        await form.get_by_label("First name").fill("Sam")
        await form.get_by_label("Email", exact=True).fill("sam@example.org")
        await form.get_by_label("Time zone").select_option("America/Chicago")
        await choose_window(form, "Tuesday", "17:00", "22:00")
        await form.get_by_role("button", name="Add", exact=True).click()
        await expect(page.locator("#facilitator-status")).to_have_text("Sam was added.")

        await page.get_by_role("button", name="Find matches").click()
        await expect(page.locator("#matching-status")).to_contain_text("1 new pairs proposed")
        card = page.locator(".proposal").first
        await expect(card).to_contain_text("Nearby states")
        await expect(card).to_contain_text("Placement gap: 4 points")
        await card.get_by_role("button", name="Accept").click()
        card = page.locator('.proposal[data-status="accepted"]')
        await card.get_by_role("button", name="Plan session").click()
        await expect(card.locator(".schedule-line").first).to_contain_text("with Sam")
        await card.get_by_role("button", name="Confirm and send invitations").click()
        await (
            page.get_by_role("dialog")
            .get_by_role("button", name="Confirm and send invitations")
            .click()
        )
        await expect(page.locator("#matching-status")).to_have_text(
            re.compile(r"^(Rosa & Dale|Dale & Rosa): session created and invitations sent\.$")
        )
        await expect(page.locator("#outbox-list li")).to_have_count(3)
        await page.locator("#outbox-list li button").first.click()
        await expect(page.locator("#message-text")).to_contain_text("#token=")
        await expect(page.locator("#message-attachments")).to_contain_text("text/calendar")
        await screenshot(page, "staff-applications")
        watch.assert_clean()
