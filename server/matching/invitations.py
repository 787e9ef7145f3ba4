"""Invitation e-mails: each person's join link, in their language, with the time in their
own time zone and a calendar (.ics) attachment. Texts live in
storyroom/data/invitations.json (one block per language).

Partners learn each other's first name and bio only; last names and contact details are
never written into another person's message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

from storyroom.matching import ics
from storyroom.matching.availability import zone


@cache
def texts() -> dict[str, Any]:
    raw = resources.files("storyroom").joinpath("data/invitations.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


@dataclass(frozen=True, slots=True)
class Person:
    """Who a message goes to: staff-only contact details stay inside this object."""

    first_name: str
    email: str
    language: str
    time_zone: str
    bio: str = ""


@dataclass(frozen=True, slots=True)
class Meeting:
    schedule_id: str
    starts_at: datetime  # aware, UTC
    minutes: int  # the calendar block
    target_minutes: int  # the conversation
    language: str  # the session's language
    host: str  # for UIDs and Message-IDs
    signature: str = "storyroom"  # the organisation's name and contact line (`Organisation`)


class Notice(StrEnum):
    """What a message says about a person's conversation: first the invitation, then
    perhaps a new time (which replaces the calendar entry) or a cancellation (which
    removes it). Each later notice carries a higher calendar SEQUENCE."""

    INVITATION = "invitation"
    UPDATE = "update"
    CANCELLATION = "cancellation"


@dataclass(frozen=True, slots=True)
class Revision:
    """Which notice this is, and its calendar SEQUENCE (0 for the first invitation)."""

    notice: Notice = Notice.INVITATION
    sequence: int = 0


def when(moment: datetime, time_zone: str, language: str) -> tuple[str, str]:
    """(date and time, date) written out in `language`, in `time_zone`."""
    t = texts()[language]
    local = moment.astimezone(zone(time_zone))
    if t["clock"] == "12h":
        clock = f"{local.hour % 12 or 12}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"
    else:
        clock = f"{local.hour}:{local.minute:02d}"
    fields = {
        "weekday": t["weekdays"][local.weekday()],
        "month": t["months"][local.month - 1],
        "day": local.day,
        "year": local.year,
        "time": clock,
        "zone": f"{local.tzname()}, {time_zone}",
    }
    return t["when"].format(**fields), t["date"].format(**fields)


def participant_message(
    sender: str,
    meeting: Meeting,
    seat: str,
    me: Person,
    partner: Person,
    facilitator_name: str,
    url: str,
    now: datetime,
    revision: Revision = Revision(),
) -> EmailMessage:
    others = {
        "partner": partner.first_name,
        "partner_bio": partner.bio,
        "facilitator": facilitator_name,
    }
    return _invitation(sender, meeting, "participant", seat, me, others, url, now, revision)


def facilitator_message(
    sender: str,
    meeting: Meeting,
    me: Person,
    a: Person,
    b: Person,
    url: str,
    now: datetime,
    revision: Revision = Revision(),
) -> EmailMessage:
    others = {"a": a.first_name, "a_bio": a.bio, "b": b.first_name, "b_bio": b.bio}
    return _invitation(
        sender, meeting, "facilitator", "facilitator", me, others, url, now, revision
    )


def _invitation(
    sender: str,
    meeting: Meeting,
    role: str,
    seat: str,
    me: Person,
    others: dict[str, str],
    url: str,
    now: datetime,
    revision: Revision,
) -> EmailMessage:
    """`me`'s invitation (or its update or cancellation): the `role`'s subject, body and
    calendar entry in their language, with the time in their time zone and `others`
    (first names and bios) filled in. The calendar entry's UID is the same for every
    notice about this person's conversation."""
    t = texts()[me.language]
    written, date = when(meeting.starts_at, me.time_zone, me.language)
    fill = {
        "name": me.first_name,
        **others,
        "when": written,
        "date": date,
        "minutes": meeting.target_minutes,
        "language": t["languages"][meeting.language],
        "url": url,
        "signature": meeting.signature,
    }
    name, address = parseaddr(sender)
    summary = t[f"{role}_summary"].format(**fill)
    subject = t[f"{role}_subject"].format(**fill)
    body = t[f"{role}_body"].format(**fill)
    description = t["calendar_description"].format(**fill)
    method = ics.Method.REQUEST
    if revision.notice is Notice.UPDATE:
        subject = t["update_subject"].format(subject=subject)
        body = t["update_notice"] + "\n\n" + body
    elif revision.notice is Notice.CANCELLATION:
        subject = t["cancel_subject"].format(**fill)
        body = t["cancel_body"].format(**fill)
        summary = t["cancel_summary"].format(summary=summary)
        description = t["cancel_description"]
        url = ""
        method = ics.Method.CANCEL
    event = ics.Event(
        uid=f"{meeting.schedule_id}-{seat}@{meeting.host}",
        start=meeting.starts_at,
        minutes=meeting.minutes,
        summary=summary,
        description=description,
        url=url,
        stamp=now,
        organizer=address,
        attendee=me.email,
        attendee_name=me.first_name,
        sequence=revision.sequence,
        method=method,
    )
    message = EmailMessage()
    message["From"] = Address(display_name=name, addr_spec=address) if name else address
    message["To"] = Address(display_name=me.first_name, addr_spec=me.email)
    message["Subject"] = subject
    message["Date"] = format_datetime(event.stamp)
    message["Message-ID"] = make_msgid(revision.notice.value, domain=meeting.host)
    message.set_content(body)
    message.add_attachment(
        ics.calendar(event),
        maintype="text",
        subtype="calendar",
        filename="storyroom.ics",
        params={"method": method.value},
    )
    # last: set_content() drops Content-* headers and add_attachment() moves them into
    # the text part, so only here does the language stay on the message itself
    message["Content-Language"] = me.language
    return message
