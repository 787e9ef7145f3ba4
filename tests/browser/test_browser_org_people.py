"""The people page (/staff/people) in real Chromium: a platform admin creates an
organisation and its first admin there; that admin (in Spanish) adds a staff member, who
signs in and sees only that organisation, then removes them after a confirmation, which
ends their sign-in; a plain staff member has no link to the page and the API refuses them.
Everything typed in comes back as text (a name with markup stays text)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from storyroom.orgs import DEFAULT_ORG_ID
from storyroom.staff.accounts import Role
from support.apply import FACILITATOR
from support.browser import LAPTOP, PageWatch, screenshot, watched_page
from support.server import RunningServer
from support.staff import StaffBrowser, cookie_session

pytestmark = pytest.mark.slow

PASSWORD = "a long enough password for tests"
PLATFORM = "platform@storyroom.example"
ADMIN = "admin@hilltop.example.edu"
MEMBER = "ana@hilltop.example.edu"
NAME = "Hilltop <i>College</i>"
CONTACT = "oss@hilltop.example.edu"

# the sign-in page's words: (email label, password label, button)
SIGN_IN = {
    "en": ("Email", "Password", "Sign in"),
    "es": ("Correo electrónico", "Contraseña", "Entrar"),
}


@dataclass
class RefusalWatch(PageWatch):
    """Console errors, but the refusals these tests provoke on purpose: Chromium logs every
    4xx answer to fetch as a console error."""

    expected: tuple[int, ...] = ()

    def assert_clean(self) -> None:
        self.errors = [
            e
            for e in self.errors
            if not any(f"the server responded with a status of {s}" in e for s in self.expected)
        ]
        super().assert_clean()


async def sign_in(page: Page, email: str, lang: str) -> None:
    """Sign in on the sign-in page the browser was sent to (it comes back after)."""
    email_label, password_label, button = SIGN_IN[lang]
    await page.get_by_label(email_label).fill(email)
    await page.get_by_label(password_label).fill(PASSWORD)
    await page.get_by_role("button", name=button).click()


async def account_emails(page: Page) -> list[str]:
    return await page.locator("#accounts-body tr").evaluate_all(
        "rows => rows.map(row => row.dataset.email)"
    )


async def api_client(server: RunningServer, email: str) -> StaffBrowser:
    staff = StaffBrowser(cookie_session(), server.url)
    status, body = await staff.sign_in(email, PASSWORD)
    assert status == 200, body
    return staff


async def status_of(staff: StaffBrowser, method: str, path: str) -> tuple[int, Any]:
    resp = await staff.http.request(method, staff.url + path, headers=staff.headers())
    return resp.status, await resp.json()


async def test_organisation_admins_manage_their_people(
    server: RunningServer, browser: Browser
) -> None:
    await server.services.accounts.add_user(PLATFORM, PASSWORD, DEFAULT_ORG_ID, Role.PLATFORM)

    # -- a platform admin creates the organisation and its first admin, in English --------
    refused = RefusalWatch(expected=(400, 409))  # a taken slug, a short password
    async with watched_page(browser, f"{server.url}/staff/people", LAPTOP, refused) as (
        page,
        watch,
    ):
        await expect(page).to_have_url(f"{server.url}/staff/signin?next=/staff/people")
        await sign_in(page, PLATFORM, "en")
        await expect(page).to_have_url(f"{server.url}/staff/people")
        await expect(page.locator('[data-nav="people"]')).to_be_visible()
        await expect(page.locator('[data-nav="people"]')).to_have_attribute("aria-current", "page")
        organisations = page.locator("#organisations")
        await expect(organisations).to_be_visible()
        await expect(page.locator("#accounts-status")).to_have_text("1 account.")
        await expect(page.locator("#accounts-table thead th")).to_have_text(
            ["Email", "Role", "Organisation", "Added", "Actions"]
        )
        await expect(page.locator("#organisations-table thead th")).to_have_text(
            ["Short name", "Name", "Contact line"]
        )

        form = page.locator("#organisation-form")
        await form.get_by_label("Short name").fill("Hilltop")  # not a slug: refused, in words
        await form.get_by_label("Name", exact=True).fill(NAME)
        await form.get_by_label("Contact line (optional)").fill(CONTACT)
        await form.get_by_role("button", name="Create").click()
        await expect(page.locator("#organisation-status")).to_have_text(
            "The short name takes only lower-case letters, digits and hyphens."
        )
        await form.get_by_label("Short name").fill("hilltop")
        await form.get_by_role("button", name="Create").click()
        await expect(page.locator("#organisation-status")).to_have_text(
            f"{NAME} was created. Add its first admin above."
        )
        row = page.locator('#organisations-body tr[data-organisation="hilltop"]')
        await expect(row).to_contain_text(NAME)
        await expect(row).to_contain_text(CONTACT)
        await expect(row.locator("i")).to_have_count(0)  # markup in a name stays text
        await form.get_by_label("Short name").fill("hilltop")  # the same slug again
        await form.get_by_label("Name", exact=True).fill("Another")
        await form.get_by_role("button", name="Create").click()
        await expect(page.locator("#organisation-status")).to_have_text("That is already taken.")

        accounts = page.locator("#account-form")
        await accounts.get_by_label("Email").fill(ADMIN)
        await accounts.get_by_label("Temporary password").fill("short")
        await accounts.get_by_label("Role").select_option(label="Admin")
        await accounts.get_by_label("Organisation").select_option("hilltop")
        await accounts.get_by_role("button", name="Add").click()
        await expect(page.locator("#account-status")).to_have_text(
            "The password needs at least 10 characters."
        )
        await accounts.get_by_label("Temporary password").fill(PASSWORD)
        await accounts.get_by_role("button", name="Add").click()
        await expect(page.locator("#account-status")).to_have_text(
            f"{ADMIN} was added and can sign in now."
        )
        admin_row = page.locator(f'#accounts-body tr[data-email="{ADMIN}"]')
        await expect(admin_row).to_contain_text("Admin")
        await expect(admin_row).to_contain_text(NAME)  # a platform admin sees whose it is
        # the platform admin's own row has no remove button
        own = page.locator(f'#accounts-body tr[data-email="{PLATFORM}"]')
        await expect(own.get_by_role("button")).to_have_count(0)
        watch.assert_clean()
    hilltop = await server.services.store.organisation_by_slug("hilltop")
    assert hilltop is not None and hilltop.name == NAME and hilltop.contact == CONTACT

    # a facilitator of each organisation, added through the API
    for email, first_name in ((PLATFORM, "Dale"), (ADMIN, "Sam")):
        adder = await api_client(server, email)
        try:
            await adder.call(
                "POST",
                "/api/facilitators",
                {**FACILITATOR, "first_name": first_name, "email": f"{first_name}@example.org"},
                expect=201,
            )
        finally:
            await adder.http.close()

    # -- the organisation's admin adds a staff member, in Spanish ---------------------------
    refused = RefusalWatch(expected=(400,))  # an address that is not one
    async with watched_page(
        browser, f"{server.url}/staff/people", LAPTOP, refused, locale="es-ES"
    ) as (page, watch):
        await sign_in(page, ADMIN, "es")
        await expect(page).to_have_url(f"{server.url}/staff/people")
        await expect(page.locator("html")).to_have_attribute("lang", "es")
        await expect(page.locator("#signed-in-as")).to_have_text(f"{ADMIN} · {NAME}")
        await expect(page.locator('[data-nav="people"]')).to_have_text("Personas")
        await expect(page.locator("#organisations")).to_be_hidden()
        await expect(page.locator("#acc-organisation-field")).to_be_hidden()
        await expect(page.locator("#accounts-status")).to_have_text("1 cuenta.")
        await expect(page.locator("#accounts-table thead th")).to_have_text(
            ["Correo electrónico", "Función", "Añadida", "Acciones"]
        )
        assert await account_emails(page) == [ADMIN]  # not the platform admin's account

        # its facilitators (not the default organisation's), deactivated from here
        roster = page.locator("#facilitator-list li.facilitator")
        await expect(roster).to_have_count(1)
        await expect(roster).to_contain_text("Sam")
        await expect(roster.locator(".state-tag")).to_have_text("Activo")
        await roster.get_by_role("button", name="Desactivar").click()
        await expect(page.locator("#facilitator-status")).to_have_text(
            "Sam está desactivado: los emparejamientos ya no cuentan con esa persona."
        )
        await expect(roster.locator(".state-tag")).to_have_text("Inactivo")
        await expect(roster.get_by_role("button", name="Activar")).to_be_visible()

        accounts = page.locator("#account-form")
        await accounts.get_by_label("Correo electrónico").fill("not an address")
        await accounts.get_by_label("Contraseña temporal").fill(PASSWORD)
        await accounts.get_by_role("button", name="Añadir").click()
        await expect(page.locator("#account-status")).to_have_text(
            "Eso no es una dirección de correo electrónico."
        )
        await accounts.get_by_label("Correo electrónico").fill(MEMBER)
        await accounts.get_by_label("Función").select_option(label="Personal")
        await accounts.get_by_role("button", name="Añadir").click()
        await expect(page.locator("#account-status")).to_have_text(
            f"Se añadió a {MEMBER}; ya puede entrar."
        )
        await expect(page.locator("#accounts-status")).to_have_text("2 cuentas.")
        member_row = page.locator(f'#accounts-body tr[data-email="{MEMBER}"]')
        await expect(member_row).to_contain_text("Personal")
        await screenshot(page, "staff-people-es")

        # -- the new staff member signs in and sees only the organisation ---------------
        async with watched_page(browser, f"{server.url}/staff", LAPTOP) as (
            member_page,
            member_watch,
        ):
            await sign_in(member_page, MEMBER, "en")
            await expect(member_page).to_have_url(f"{server.url}/staff")
            await expect(member_page.locator("#signed-in-as")).to_have_text(f"{MEMBER} · {NAME}")
            await expect(member_page.locator('[data-nav="applications"]')).to_be_visible()
            await expect(member_page.locator('[data-nav="people"]')).to_be_hidden()
            member_watch.assert_clean()

            member = await api_client(server, MEMBER)
            try:
                found = await member.call("GET", "/api/organisations")
                assert [o["slug"] for o in found["organisations"]] == ["hilltop"]
                for method, path in (
                    ("GET", "/api/staff/accounts"),
                    ("DELETE", "/api/staff/accounts/1"),
                ):
                    status, body = await status_of(member, method, path)
                    assert (status, body["error"]["code"]) == (403, "admin_only"), (path, body)
                status, body = await status_of(member, "POST", "/api/organisations")
                assert status == 403 and body["error"]["code"] == "platform_only"

                # -- the admin removes them: Cancel keeps them, Quitar removes them -------
                await member_row.get_by_role("button", name=f"Quitar {MEMBER}").click()
                dialog = page.get_by_role("dialog")
                await expect(dialog).to_contain_text(MEMBER)
                await dialog.get_by_role("button", name="Cancelar").click()
                await expect(dialog).to_have_count(0)
                assert sorted(await account_emails(page)) == sorted([ADMIN, MEMBER])
                assert (await member.call("GET", "/api/staff/me"))["email"] == MEMBER

                await member_row.get_by_role("button", name=f"Quitar {MEMBER}").click()
                await page.get_by_role("dialog").get_by_role("button", name="Quitar").click()
                await expect(page.locator("#account-status")).to_have_text(f"Se quitó a {MEMBER}.")
                await expect(page.locator("#accounts-status")).to_have_text("1 cuenta.")
                assert await account_emails(page) == [ADMIN]

                # their session ends at once, and their password no longer signs in
                status, body = await status_of(member, "GET", "/api/staff/me")
                assert status == 401, body
                again = StaffBrowser(cookie_session(), server.url)
                try:
                    status, body = await again.sign_in(MEMBER, PASSWORD)
                    assert status == 401, body
                finally:
                    await again.http.close()
            finally:
                await member.http.close()
            # the open page goes to the sign-in page at its next call (the page's own, with
            # the path encoded, or the server's when it is reloaded first)
            await member_page.reload()
            await expect(member_page).to_have_url(
                re.compile(rf"^{re.escape(server.url)}/staff/signin\?next=(/|%2F)staff$")
            )

        # the admin cannot remove their own account (no button, and the API says why)
        await expect(
            page.locator(f'#accounts-body tr[data-email="{ADMIN}"]').get_by_role("button")
        ).to_have_count(0)
        watch.assert_clean()
    admin = await api_client(server, ADMIN)
    try:
        me = await admin.call("GET", "/api/staff/accounts")
        own_id = next(a["id"] for a in me["accounts"] if a["email"] == ADMIN)
        status, body = await status_of(admin, "DELETE", f"/api/staff/accounts/{own_id}")
        assert (status, body["error"]["code"]) == (409, "own_account"), body
    finally:
        await admin.http.close()


async def test_plain_staff_have_no_link_and_the_page_says_why(
    server: RunningServer, browser: Browser
) -> None:
    org = await server.services.store.add_organisation("hilltop", NAME, None, CONTACT, {})
    await server.services.accounts.add_user(MEMBER, PASSWORD, org.id, Role.STAFF)
    watch = RefusalWatch(expected=(403,))
    async with watched_page(
        browser, f"{server.url}/staff/people", LAPTOP, watch, locale="es-ES"
    ) as (page, _):
        await sign_in(page, MEMBER, "es")
        await expect(page).to_have_url(f"{server.url}/staff/people")
        await expect(page.locator('[data-nav="people"]')).to_be_hidden()
        await expect(page.locator("#accounts-status")).to_have_text(
            "Solo los administradores de su organización pueden ver y cambiar sus cuentas."
        )
        await expect(page.locator("#account-form")).to_be_hidden()
        await expect(page.locator("#organisations")).to_be_hidden()
        await expect(page.locator("#accounts-body tr")).to_have_count(0)
    # Chromium logged the refused call, and nothing else went wrong
    assert watch.errors, "the page did not call the accounts API"
    watch.assert_clean()
