"""The application form in real Chromium: its words per language, the page in its own
context, and filling in an availability window and the last step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Locator, Page, expect

from support.browser import PageWatch, watched_page

# The form's words for an availability window and the last step, per language.
WORDS = {
    "en": {
        "window": ("Day", "From", "Until"),
        "consents": ("You may contact me", "I have read the privacy notice"),
        "send": "Send my application",
    },
    "es": {
        "window": ("Día", "Desde", "Hasta"),
        "consents": ("Pueden comunicarse conmigo", "He leído el aviso de privacidad"),
        "send": "Enviar mi solicitud",
    },
}


class FormWatch(PageWatch):
    """Console errors, but a refused submission (400) is part of these tests: Chromium
    logs every 4xx answer to fetch as a console error."""

    def assert_clean(self) -> None:
        expected = "Failed to load resource: the server responded with a status of 400"
        self.errors = [e for e in self.errors if expected not in e]
        super().assert_clean()


@asynccontextmanager
async def form_page(
    browser: Browser, url: str, viewport: dict[str, int], ready: bool = True
) -> AsyncIterator[tuple[Page, PageWatch]]:
    """`url` in its own context; with `ready`, once the page module says it is ready."""
    opened = watched_page(browser, url, viewport, FormWatch(), timezone_id="America/Chicago")
    async with opened as (page, watch):
        if ready:
            await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        yield page, watch


async def choose_window(
    scope: Page | Locator, day: str, start: str, end: str, lang: str = "en"
) -> None:
    """Fill in one availability window (day by its name, times as HH:MM)."""
    day_label, from_label, until_label = WORDS[lang]["window"]
    await scope.get_by_label(day_label).select_option(label=day)
    await scope.get_by_label(from_label).select_option(start)
    await scope.get_by_label(until_label).select_option(end)


async def agree_and_send(page: Page, lang: str = "en") -> None:
    for consent in WORDS[lang]["consents"]:
        await page.get_by_label(consent).check()
    await page.get_by_role("button", name=WORDS[lang]["send"]).click()
