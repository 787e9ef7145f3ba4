"""iCalendar (RFC 5545) events for invitations: one VEVENT in a VCALENDAR, times in UTC,
text escaped, lines folded at 75 octets, CRLF line endings.

Invitations are iTIP (RFC 5546) requests from the organiser to one attendee, so that a
later message about the same conversation (same UID, higher SEQUENCE) replaces the
calendar entry (METHOD:REQUEST) or removes it (METHOD:CANCEL, STATUS:CANCELLED)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

PRODID = "-//storyroom//invitations//EN"
LINE_OCTETS = 75


class Method(StrEnum):
    """The iTIP method of a calendar file (also its MIME `method` parameter)."""

    REQUEST = "REQUEST"  # a new or updated entry
    CANCEL = "CANCEL"  # the entry is withdrawn


@dataclass(frozen=True, slots=True)
class Event:
    uid: str  # the same for every message about one person's conversation
    start: datetime  # aware
    minutes: int
    summary: str
    description: str
    url: str  # "" when there is no link to give (a cancellation)
    stamp: datetime  # aware: when this invitation was made
    organizer: str  # e-mail address
    attendee: str  # e-mail address
    attendee_name: str
    sequence: int = 0  # each later message about the same entry counts up
    method: Method = Method.REQUEST


def escape(text: str) -> str:
    """TEXT value escaping: backslash, semicolon, comma and newlines."""
    return (
        text.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\n")
        .replace("\n", "\\n")
    )


def fold(line: str) -> bytes:
    """A content line folded so that no physical line is longer than 75 octets, never
    splitting a UTF-8 character; continuation lines start with one space."""
    out: list[bytes] = []
    current = b""
    limit = LINE_OCTETS
    for char in line:
        encoded = char.encode("utf-8")
        if len(current) + len(encoded) > limit:
            out.append(current)
            current = b" "
            limit = LINE_OCTETS
        current += encoded
    out.append(current)
    return b"\r\n".join(out) + b"\r\n"


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def param_text(text: str) -> str:
    """A parameter value (CN): quoted, without the characters a quoted value cannot hold."""
    return '"' + "".join(c for c in text if c not in '"\r\n') + '"'


def calendar(event: Event) -> bytes:
    """The .ics file of one event, as a request or a cancellation."""
    cancelled = event.method is Method.CANCEL
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        f"METHOD:{event.method}",
        "BEGIN:VEVENT",
        f"UID:{event.uid}",
        f"SEQUENCE:{event.sequence}",
        f"DTSTAMP:{utc_stamp(event.stamp)}",
        f"DTSTART:{utc_stamp(event.start)}",
        f"DTEND:{utc_stamp(event.start + timedelta(minutes=event.minutes))}",
        f"SUMMARY:{escape(event.summary)}",
        f"DESCRIPTION:{escape(event.description)}",
        f"ORGANIZER:mailto:{event.organizer}",
        f"ATTENDEE;CN={param_text(event.attendee_name)};ROLE=REQ-PARTICIPANT;RSVP=FALSE:"
        f"mailto:{event.attendee}",
        *([f"URL:{event.url}"] if event.url else []),
        f"STATUS:{'CANCELLED' if cancelled else 'CONFIRMED'}",
        f"TRANSP:{'TRANSPARENT' if cancelled else 'OPAQUE'}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return b"".join(fold(line) for line in lines)
