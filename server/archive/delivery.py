"""Copies without a staff step: once a recording is ready and both participants agree to
copies, each participant who has an address (`Copies.contacts`) is sent their personal
copy link, in their language, through the mailer (SMTP, else the outbox folder).

At most once per recording and seat: a `copy_mailings` row is claimed (its primary key
refuses a second) before the link is made and the email goes, and marked sent after.
A process that dies between the two leaves the claim unconfirmed; it is never sent again
by itself (it may have gone), and staff see it and can resend. Staff resends are
explicit and always go.

What makes an email due is checked again each time, so the order of events does not
matter: the recording becoming ready, the second "yes" to copies, an address being
entered, or the server starting (for anything that became due while it was down).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from storyroom.archive.copies import Copies, IssuedLink, SeatContact, access_entry
from storyroom.config import Settings
from storyroom.errors import PreconditionFailed
from storyroom.matching.invitations import when
from storyroom.matching.outbox import Mailer, deliver
from storyroom.orgs import EVERY_ORGANISATION, Organisation
from storyroom.seats import PARTICIPANT_SEATS
from storyroom.status import FinalizeStatus
from storyroom.store import RecordingRow, Store
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

AUTOMATIC = "automatic copy email"
"""Who made a link that was sent by itself (`copy_links.created_by`)."""


@cache
def texts() -> dict[str, Any]:
    raw = resources.files("storyroom").joinpath("data/copy_mail.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


def copy_message(
    settings: Settings,
    contact: SeatContact,
    name: str,
    partner: str,
    link: IssuedLink,
    organisation: Organisation,
) -> EmailMessage:
    """The email that hands a participant their copy link, in their language. It names
    the partner by first name only, as everything else they were sent did."""
    t = texts()[contact.language]
    _, expires = when(datetime.fromtimestamp(link.expires_at, UTC), "UTC", contact.language)
    fill = {
        "name": name,
        "partner": partner,
        "url": link.url,
        "expires": expires,
        "signature": organisation.signature,
    }
    message = EmailMessage()
    sender_name, sender = parseaddr(settings.mail_from)
    message["From"] = Address(display_name=sender_name, addr_spec=sender) if sender_name else sender
    message["To"] = Address(display_name=name, addr_spec=contact.email)
    message["Subject"] = t["subject"].format(**fill)
    message["Date"] = format_datetime(datetime.now(UTC))
    host = urlsplit(settings.base_url).hostname or "storyroom.invalid"
    message["Message-ID"] = make_msgid("copy", domain=host)
    message.set_content(t["body"].format(**fill))
    message["Content-Language"] = contact.language  # after set_content, which clears Content-*
    return message


class CopyDelivery:
    """The automatic copy emails and staff resends. Owner: app.py (`Services.delivery`),
    which starts it after the store and closes it before.

    Work arrives as recording ids on a queue and is done one at a time by the one task
    this object owns, so two nudges for the same recording never race."""

    def __init__(self, store: Store, settings: Settings, copies: Copies, mailer: Mailer) -> None:
        self.store = store
        self.settings = settings
        self.copies = copies
        self.mailer = mailer
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="copy-delivery")
        for recording_id in await self.copies.unmailed():
            self.notify(recording_id)

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def notify(self, recording_id: str) -> None:
        """Something about this recording changed: send what has become due."""
        self.queue.put_nowait(recording_id)

    async def notify_session(self, session_id: str) -> None:
        """Consent or an address of this session changed: each of its recordings."""
        for rec in await self.store.recordings_for(session_id):
            self.notify(rec.id)

    async def recording_updated(self, rec: RecordingRow) -> None:
        """Hears every finalization change (`FinalizeJobs.on_update`)."""
        if rec.finalize_status is FinalizeStatus.READY:
            self.notify(rec.id)

    async def _run(self) -> None:
        while True:
            recording_id = await self.queue.get()
            try:
                await self.send_due(recording_id)
            except Exception:
                # the claim (if any) stays unconfirmed for staff to resend; the next
                # recording's emails must still go
                log.exception("sending the copy emails of %s failed", recording_id)

    async def send_due(self, recording_id: str) -> list[str]:
        """Send each participant's copy email of this recording if it is due and was
        never sent; returns the seats sent to now."""
        rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if rec is None or access_entry(rec) is None:
            return []
        if not await self.copies.both_agree(rec.session_id):
            return []
        contacts = await self.copies.contacts(rec.session_id)
        sent = []
        for seat in PARTICIPANT_SEATS:
            contact = contacts.get(seat)
            if contact is None or not await self.copies.claim_mailing(rec.id, seat):
                continue
            await self._send(rec, contact, AUTOMATIC)
            sent.append(seat)
        return sent

    async def resend(self, rec: RecordingRow, seat: str, actor: str) -> dict[str, Any]:
        """Staff: a new link for one participant, emailed to them now (their older link
        stops working)."""
        contact = (await self.copies.contacts(rec.session_id)).get(seat)
        if contact is None:
            raise PreconditionFailed(
                "there is no email address for this participant", code="no_contact"
            )
        return await self._send(rec, contact, actor)

    async def _send(self, rec: RecordingRow, contact: SeatContact, actor: str) -> dict[str, Any]:
        link = await self.copies.issue_for(rec, contact.seat, actor)
        names = {s.seat: s.name for s in await self.store.seats(rec.session_id)}
        partner = next(s for s in PARTICIPANT_SEATS if s != contact.seat)
        organisation = await self.store.session_organisation(rec.session_id)
        message = copy_message(
            self.settings,
            contact,
            names.get(contact.seat, ""),
            names.get(partner, ""),
            link,
            organisation,
        )
        sent = await deliver(self.mailer, self.settings, message, organisation.id)
        await self.copies.mailing_sent(
            rec.id, contact.seat, link.id, sent["via"], sent["ref"], sent.get("error")
        )
        log.info("copy link %s of %s sent to seat %s", link.id, rec.id, contact.seat)
        return {"seat": contact.seat, "link_id": link.id, "via": sent["via"]}
