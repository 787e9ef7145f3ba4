"""Staff's side of the participants' copies in real Chromium, on a 390-px phone, in
English and Spanish: each seat's address entered, changed and removed on the sessions
page; on the recording page what was emailed to whom and when (and an unconfirmed
send), a resend, a clip cut and downloaded, and the shared player (waveform from its
levels, numbered marks, previous and next question)."""

from __future__ import annotations

import io
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import av
import pytest
from playwright.async_api import Browser, Page, expect

from support.archive import TITLE, Finished
from support.browser import horizontal_overflow, screenshot, sign_in_as_staff, watched_page
from support.polling import wait_for
from support.server import RunningServer
from support.staff import StaffBrowser

pytestmark = pytest.mark.slow

PHONE_390 = {"width": 390, "height": 844}
REFUSED_CLIP = (
    "error: Failed to load resource: the server responded with a status of 400 (Bad Request)"
)


def outbox_to(server: RunningServer, address: str) -> list[Any]:
    """The messages in the outbox folder addressed to `address`, oldest first."""
    found = []
    for path in sorted(server.settings.outbox_dir.glob("*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if any(a.addr_spec == address for a in message["To"].addresses):
            found.append(message)
    return found


async def both_agree_to_copies(staff: StaffBrowser, recording_id: str) -> None:
    for seat in ("a", "b"):
        body = {"seat": seat, "copies": True, "note": "said yes on the phone"}
        await staff.call("PUT", f"/api/recordings/{recording_id}/consent", body)


async def player_time(page: Page) -> float:
    value: Any = await page.evaluate("() => document.querySelector('#player').currentTime")
    return float(value)


def clip_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


async def test_addresses_mailings_resend_and_a_clip_in_english(
    archive: RunningServer,
    staff: StaffBrowser,
    finished: Finished,
    browser: Browser,
    tmp_path: Path,
) -> None:
    rec_id, session_id = finished.recording_id, finished.session_id
    async with watched_page(browser, f"{archive.url}/staff", PHONE_390, accept_downloads=True) as (
        page,
        watch,
    ):
        await sign_in_as_staff(page)
        await expect(page).to_have_url(f"{archive.url}/staff")

        # the sessions page: choose the session, enter Rosa's address in Spanish
        await page.get_by_label("Session", exact=True).select_option(session_id)
        rosa = page.locator('form.contact-form[data-seat="a"]')
        await expect(rosa.locator("legend")).to_have_text("Participant A: Rosa")
        await expect(rosa).to_contain_text("No address: no copy will be emailed.")
        await expect(rosa.get_by_role("button", name="Remove the address of")).to_be_disabled()
        await rosa.get_by_label("Email", exact=True).fill("rosa@example.org")
        await rosa.get_by_label("Language of the email").select_option("es")
        await rosa.get_by_role("button", name="Save").click()
        await expect(page.locator("#contacts-status")).to_have_text("Saved: Participant A: Rosa.")
        await expect(rosa).to_contain_text("Entered by staff")
        contacts = await staff.call("GET", f"/api/sessions/{session_id}/contacts")
        assert contacts["contacts"]["a"]["email"] == "rosa@example.org"
        assert contacts["contacts"]["a"]["language"] == "es"

        # Dale's: entered, changed, removed (after a confirmation)
        dale = page.locator('form.contact-form[data-seat="b"]')
        await dale.get_by_label("Email", exact=True).fill("dale@example.org")
        await dale.get_by_role("button", name="Save").click()
        await expect(page.locator("#contacts-status")).to_have_text("Saved: Participant B: Dale.")
        await dale.get_by_label("Email", exact=True).fill("dale.new@example.org")
        await dale.get_by_role("button", name="Save").click()
        await wait_for(
            lambda: _contact_email(staff, session_id, "b", "dale.new@example.org"),
            what="Dale's changed address",
        )
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "staff-contacts-phone")
        await dale.get_by_role("button", name="Remove the address of Participant B: Dale").click()
        dialog = page.get_by_role("dialog", name="Remove the address of Participant B: Dale?")
        await dialog.get_by_role("button", name="Remove").click()
        await expect(page.locator("#contacts-status")).to_have_text(
            "Removed: no copy will be emailed to Participant B: Dale."
        )
        contacts = await staff.call("GET", f"/api/sessions/{session_id}/contacts")
        assert set(contacts["contacts"]) == {"a"}

        # both agree to copies now: Rosa's copy goes by itself, and nobody else's
        assert outbox_to(archive, "rosa@example.org") == []
        await both_agree_to_copies(staff, rec_id)
        await wait_for(lambda: len(outbox_to(archive, "rosa@example.org")) == 1, what="Rosa's copy")
        [first] = outbox_to(archive, "rosa@example.org")
        assert first["Content-Language"] == "es"

        # the recording page says so, and resends
        await page.goto(f"{archive.url}/staff/recordings/{rec_id}")
        await expect(page.locator("#rec-title")).to_have_text(TITLE)
        rosa_mail = page.locator('#mail-list li[data-seat="a"]')
        await expect(rosa_mail).to_have_attribute("data-mail", "sent")
        await expect(rosa_mail).to_contain_text("rosa@example.org · Español")
        await expect(rosa_mail.locator(".mail-state")).to_contain_text("(to the outbox)")
        dale_mail = page.locator('#mail-list li[data-seat="b"]')
        await expect(dale_mail).to_contain_text("No email address")
        await expect(dale_mail.get_by_role("button")).to_be_disabled()
        await rosa_mail.get_by_role(
            "button", name="Resend the copy link to Rosa (Participant A)"
        ).click()
        dialog = page.get_by_role("dialog", name="Send Rosa (Participant A) a new link?")
        await expect(dialog).to_contain_text("rosa@example.org")
        await dialog.get_by_role("button", name="Send a new link").click()
        await expect(page.locator("#mail-status")).to_have_text(
            "A new link was sent to Rosa (Participant A) (rosa@example.org)."
        )
        await wait_for(lambda: len(outbox_to(archive, "rosa@example.org")) == 2, what="the resend")
        links = (await staff.call("GET", f"/api/recordings/{rec_id}"))["copy_links"]
        assert [link["state"] for link in links if link["seat"] == "a"].count("active") == 1

        assert outbox_to(archive, "dale@example.org") == outbox_to(archive, "dale.new@example.org")
        assert outbox_to(archive, "dale.new@example.org") == []

        # a send that began and was never confirmed (the server died between the two)
        assert await archive.services.copies.claim_mailing(rec_id, "b")
        await page.reload()
        await expect(dale_mail).to_have_attribute("data-mail", "unconfirmed")
        await expect(dale_mail.locator(".mail-state")).to_contain_text("Unconfirmed")

        # the shared player: levels drawn, numbered marks, previous/next question
        box = page.locator("#player-root .waveform-box")
        await expect(box).to_have_attribute("data-levels", "1000")
        rec = await staff.call("GET", f"/api/recordings/{rec_id}")
        second = rec["chapters"][1]["start_s"]
        await wait_for(
            lambda: page.evaluate("() => document.querySelector('#player').readyState >= 1"),
            what="the access copy in the player",
        )
        await page.get_by_role("button", name="Next question").click()
        await wait_for(lambda: _near(page, second), what="the next question")
        await expect(page.locator("#chapters li").nth(1)).to_have_attribute("aria-current", "true")
        await page.get_by_role("button", name="Question 1 at 0:0").focus()
        await page.keyboard.press("Enter")
        await wait_for(lambda: _near(page, rec["chapters"][0]["start_s"]), what="question 1")
        await page.evaluate("() => document.querySelector('#player').pause()")

        # a clip: bad input in plain words, then one that downloads
        await page.get_by_label("Start (minutes:seconds)").fill("soon")
        await page.get_by_role("button", name="Cut and download").click()
        await expect(page.locator("#clip-status")).to_have_text(
            "Write the start as minutes:seconds (such as 1:30) and a length in seconds."
        )
        await page.get_by_label("Start (minutes:seconds)").fill("0:01")
        await page.get_by_label("Length (seconds)").fill("60")
        await page.get_by_role("button", name="Cut and download").click()
        await expect(page.locator("#clip-status")).to_contain_text(
            "The clip must lie within the recording (0:00 to"
        )
        await page.get_by_label("Start (minutes:seconds)").fill("0:00")
        await page.get_by_label("Length (seconds)").fill("2")
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="Cut and download").click()
        download = await download_info.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        assert saved.suffix in (".mp3", ".m4a")
        assert abs(clip_seconds(saved.read_bytes()) - 2) < 0.1
        await expect(page.locator("#clip-status")).to_have_text(
            "The clip is ready: 0:02 from 0:00."
        )
        await screenshot(page, "staff-recording-copies-phone")
        assert await horizontal_overflow(page) == 0
        audit = await staff.call("GET", "/api/audit?limit=50")
        actions = [entry["action"] for entry in audit["entries"]]
        assert {"contact_changed", "copy_resent", "clip"} <= set(actions)
        # the one refused clip is the only thing the console reports
        assert watch.errors == [REFUSED_CLIP], watch.errors


async def test_the_same_in_spanish(
    archive: RunningServer,
    staff: StaffBrowser,
    finished: Finished,
    browser: Browser,
) -> None:
    rec_id, session_id = finished.recording_id, finished.session_id
    await both_agree_to_copies(staff, rec_id)
    async with watched_page(browser, f"{archive.url}/staff", PHONE_390) as (page, watch):
        await sign_in_as_staff(page)
        await expect(page).to_have_url(f"{archive.url}/staff")
        await page.locator("#lang-select").select_option("es")
        await expect(page.locator("#contacts-title")).to_have_text("A dónde van las copias")
        await page.get_by_label("Sesión", exact=True).select_option(session_id)
        dale = page.locator('form.contact-form[data-seat="b"]')
        await expect(dale.locator("legend")).to_have_text("Participante B: Dale")
        await expect(dale).to_contain_text("Sin dirección: no se enviará ninguna copia por correo.")
        await dale.get_by_label("Correo electrónico").fill("dale@example.org")
        await dale.get_by_role("button", name="Guardar").click()
        await expect(page.locator("#contacts-status")).to_have_text(
            "Guardado: Participante B: Dale."
        )
        await expect(dale).to_contain_text("Escrita por el personal")
        await screenshot(page, "staff-contacts-phone-es")
        assert await horizontal_overflow(page) == 0

        await wait_for(lambda: len(outbox_to(archive, "dale@example.org")) == 1, what="Dale's copy")
        await page.goto(f"{archive.url}/staff/recordings/{rec_id}")
        await expect(page.locator("#mail-title")).to_have_text("Copias por correo")
        dale_mail = page.locator('#mail-list li[data-seat="b"]')
        await expect(dale_mail.locator(".mail-state")).to_contain_text("(a la bandeja de salida)")
        rosa_mail = page.locator('#mail-list li[data-seat="a"]')
        await expect(rosa_mail).to_contain_text("Sin dirección de correo")
        await expect(rosa_mail.locator(".mail-state")).to_have_text("No enviado")
        await dale_mail.get_by_role("button", name="Reenviar el enlace de la copia a").click()
        dialog = page.get_by_role("dialog")
        await expect(dialog).to_contain_text("dale@example.org")
        await dialog.get_by_role("button", name="Enviar un enlace nuevo").click()
        await expect(page.locator("#mail-status")).to_contain_text("Se envió un enlace nuevo a")
        await wait_for(lambda: len(outbox_to(archive, "dale@example.org")) == 2, what="the resend")
        await expect(page.get_by_role("button", name="Pregunta siguiente")).to_be_visible()
        await expect(page.locator("#clip-title")).to_have_text("Cortar un fragmento")
        await page.get_by_label("Inicio (minutos:segundos)").fill("0:00")
        await page.get_by_label("Duración (segundos)").fill("500")
        await page.get_by_role("button", name="Cortar y descargar").click()
        await expect(page.locator("#clip-status")).to_have_text(
            "Un fragmento dura como máximo 3 minutos."
        )
        await screenshot(page, "staff-recording-copies-phone-es")
        assert await horizontal_overflow(page) == 0
        # the one refused clip is the only thing the console reports
        assert watch.errors == [REFUSED_CLIP], watch.errors


async def _contact_email(staff: StaffBrowser, session_id: str, seat: str, email: str) -> bool:
    found = await staff.call("GET", f"/api/sessions/{session_id}/contacts")
    return bool(found["contacts"].get(seat, {}).get("email") == email)


async def _near(page: Page, seconds: float) -> bool:
    return abs(await player_time(page) - seconds) < 0.3
