"""Shared by the applications tests: a valid application, a tiny .ics reader and the
icalendar package's reading of an invitation."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import icalendar


def application(**changes: Any) -> dict[str, Any]:
    """A valid application; `changes` replace fields (None removes one)."""
    payload: dict[str, Any] = {
        "first_name": "Rosa",
        "last_name": "Delgado",
        "email": "rosa@example.org",
        "phone": "+1 915 555 0100",
        "city": "El Paso",
        "region": "TX",
        "time_zone": "America/Denver",
        "language": "en",
        "speaks": ["en", "es"],
        "placement": 2,
        "party": "",
        "bio": "Nurse and mother of two; I coach Little League on weekends.",
        "shaped_views": "Growing up on the border.",
        "availability": [{"day": 1, "start": "18:00", "end": "21:00"}],
        "accessibility": "",
        "consent_contact": True,
        "consent_privacy": True,
    }
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


# A pair the matching engine pairs, and a facilitator free to meet them.
EVENINGS = [{"day": d, "start": "09:00", "end": "22:00"} for d in range(7)]
# Rosa Delgado of El Paso, TX, speaks en and es, placement 2 (the valid application's)
ROSA = application(time_zone="America/Chicago", language="es", bio="Enfermera y madre de dos.")
DALE = application(
    first_name="Dale",
    last_name="Kowalski",
    email="dale@example.org",
    phone="+1 918 555 0199",
    city="Tulsa",
    region="OK",
    time_zone="America/Chicago",
    language="en",
    speaks=["en"],
    placement=6,
    bio="Retired machinist who bakes bread.",
)
FACILITATOR = {
    "first_name": "Sam",
    "email": "sam@example.org",
    "language": "en",
    "speaks": ["en", "es"],
    "time_zone": "America/New_York",
    "availability": EVENINGS,
}


def unfold(ics: bytes) -> list[str]:
    """The content lines of an iCalendar file (RFC 5545 section 3.1), checking the
    physical lines on the way: CRLF endings and at most 75 octets each."""
    assert ics.endswith(b"\r\n")
    physical = ics[:-2].split(b"\r\n")
    assert all(b"\n" not in line and b"\r" not in line for line in physical)
    assert all(len(line) <= 75 for line in physical), max(physical, key=len)
    lines: list[bytes] = []
    for line in physical:
        if line.startswith(b" "):
            lines[-1] += line[1:]
        else:
            lines.append(line)
    return [line.decode("utf-8") for line in lines]


def ics_properties(ics: bytes) -> dict[str, str]:
    """Name -> value of each content line inside the VEVENT (unescaped text)."""
    out: dict[str, str] = {}
    inside = False
    for line in unfold(ics):
        if line == "BEGIN:VEVENT":
            inside = True
            continue
        if line == "END:VEVENT":
            inside = False
        if inside:
            name, _, value = line.partition(":")
            out[name.split(";")[0]] = (
                value.replace("\\n", "\n")
                .replace("\\,", ",")
                .replace("\\;", ";")
                .replace("\\\\", "\\")
            )
    return out


def calendar_of(message: EmailMessage) -> icalendar.Calendar:
    """The message's storyroom.ics, read by the icalendar package (not by our writer's
    rules), with its MIME `method` parameter checked against the file's METHOD."""
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    calendar = icalendar.Calendar.from_ical(data)
    assert part.get_param("method") == str(calendar["METHOD"])
    return calendar
