"""Mail: .ics files that calendars accept (CRLF, folded at 75 octets, escaped text, UTC
times), invitations in the reader's language and time zone, the outbox folder (names
from the server only), and SMTP delivery to a small SMTP server on loopback."""

from __future__ import annotations

import asyncio
import email.policy
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from storyroom.config import Settings
from storyroom.errors import NotFound
from storyroom.matching import ics
from storyroom.matching.invitations import Meeting, Person, facilitator_message, participant_message
from storyroom.matching.outbox import NAME_RE, Outbox, Smtp, describe, mailer
from storyroom.orgs import EVERY_ORGANISATION
from support.apply import ics_properties, unfold
from support.server import free_port

START = datetime(2025, 6, 3, 23, 0, tzinfo=UTC)  # Tuesday 18:00 in Chicago (CDT)
NOW = datetime(2025, 5, 30, 12, 0, tzinfo=UTC)
URL = "http://127.0.0.1:8080/room/ses_0123456789abcdef#token=" + "t" * 32
MEETING = Meeting("sch_0123456789abcdef", START, 60, 40, "en", "storyroom.test")
ROSA = Person("Rosa", "rosa@example.org", "es", "America/Chicago", "Enfermera, madre de dos.")
DALE = Person(
    "Dale", "dale@example.org", "en", "America/New_York", "Retired machinist; bakes bread."
)
SAM = Person("Sam", "sam@example.org", "en", "America/Los_Angeles")


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def calendar_of(message: EmailMessage) -> bytes:
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert part.get_filename() == "storyroom.ics"
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def test_ics_folds_escapes_and_uses_utc() -> None:
    event = ics.Event(
        uid="sch_1-a@storyroom.test",
        start=datetime(2025, 6, 3, 18, 0, tzinfo=ZoneInfo("America/Chicago")),
        minutes=60,
        summary="Conversación con Dale; ¡hola, mundo!",
        description="Línea uno\nsu enlace: " + URL + " " + "ñ" * 80,
        url=URL,
        stamp=NOW,
        organizer="rooms@example.org",
        attendee="rosa@example.org",
        attendee_name='Rosa "R"',
    )
    data = ics.calendar(event)
    lines = unfold(data)  # checks CRLF and 75-octet physical lines
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    assert "VERSION:2.0" in lines and "BEGIN:VEVENT" in lines and "END:VEVENT" in lines
    expected = {
        "DTSTART": "20250603T230000Z",
        "DTEND": "20250604T000000Z",
        "DTSTAMP": "20250530T120000Z",
        "UID": "sch_1-a@storyroom.test",
        "SUMMARY": "Conversación con Dale; ¡hola, mundo!",
        "DESCRIPTION": event.description,
    }
    props = ics_properties(data)
    assert {name: props[name] for name in expected} == expected
    assert "SUMMARY:Conversación con Dale\\; ¡hola\\, mundo!" in lines
    # multi-byte characters are never split across a fold
    data.decode("utf-8")
    for physical in data.split(b"\r\n"):
        physical.decode("utf-8")


def test_participant_invitation_in_their_language_and_zone() -> None:
    message = participant_message(
        "storyroom <rooms@example.org>", MEETING, "a", ROSA, DALE, "Sam", URL, NOW
    )
    data = message.as_bytes(policy=email.policy.SMTP)
    again = parse(data)
    assert again["To"].addresses[0].addr_spec == "rosa@example.org"
    assert again["From"].addresses[0].addr_spec == "rooms@example.org"
    assert again["Subject"] == "Su conversación con Dale el martes 3 de junio"
    assert again["Message-ID"] and again["Date"]
    text = again.get_body(("plain",)).get_content()
    assert text.startswith("Hola, Rosa:")
    assert "martes 3 de junio de 2025, a las 18:00 (CDT, America/Chicago)" in text
    assert URL in text
    assert "Retired machinist; bakes bread." in text  # the partner's bio
    # never the partner's contact details or last name
    assert "dale@example.org" not in data.decode("utf-8", "replace")
    props = ics_properties(calendar_of(again))
    assert props["DTSTART"] == "20250603T230000Z"
    assert URL in props["DESCRIPTION"]
    assert props["SUMMARY"] == "Conversación con Dale (storyroom)"


def test_english_and_facilitator_invitations() -> None:
    message = participant_message("rooms@example.org", MEETING, "b", DALE, ROSA, "Sam", URL, NOW)
    text = message.get_body(("plain",)).get_content()
    assert text.startswith("Hello Dale,")
    assert "Tuesday, June 3, 2025 at 7:00 PM (EDT, America/New_York)" in text
    facilitator = facilitator_message("rooms@example.org", MEETING, SAM, ROSA, DALE, URL, NOW)
    text = facilitator.get_body(("plain",)).get_content()
    assert "between Rosa and Dale" in text
    assert "Tuesday, June 3, 2025 at 4:00 PM (PDT, America/Los_Angeles)" in text
    assert "rosa@example.org" not in text and "dale@example.org" not in text
    assert ics_properties(calendar_of(facilitator))["UID"].endswith("-facilitator@storyroom.test")


async def test_outbox_writes_lists_and_reads(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    assert await outbox.entries(EVERY_ORGANISATION) == []
    names = []
    for who in (ROSA, DALE):
        other = DALE if who is ROSA else ROSA
        names.append(
            await outbox.send(
                participant_message("rooms@example.org", MEETING, "a", who, other, "Sam", URL, NOW)
            )
        )
    assert all(NAME_RE.match(name) for name in names) and len(set(names)) == 2
    entries = await outbox.entries(EVERY_ORGANISATION)
    assert {e.name for e in entries} == set(names)
    assert {e.to for e in entries} == {"Rosa <rosa@example.org>", "Dale <dale@example.org>"}
    message, raw = await outbox.read(names[0], EVERY_ORGANISATION)
    assert parse(raw)["Message-ID"] == message["Message-ID"]
    shown = describe(message)
    assert shown["attachments"][0]["content_type"] == "text/calendar"
    assert URL in shown["text"]
    assert (tmp_path / "outbox" / names[0]).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "name",
    ["../storyroom.sqlite3", "x.eml", "20250101T000000Z-msg_0123456789abcdef.eml", "", ".eml"],
)
async def test_outbox_refuses_names_it_did_not_make(tmp_path: Path, name: str) -> None:
    outbox = Outbox(tmp_path / "outbox")
    (tmp_path / "outbox").mkdir()
    with pytest.raises(NotFound):
        await outbox.read(name, EVERY_ORGANISATION)


class SmtpSink:
    """A minimal SMTP server on loopback (RFC 5321 basics: EHLO, MAIL, RCPT, DATA)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = free_port()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", self.port)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await say("220 sink ready")
        sender, recipients = "", []
        try:
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    await say("250 sink")
                elif verb == "MAIL":
                    sender, recipients = line.split(":", 1)[1].strip(" <>"), []
                    await say("250 ok")
                elif verb == "RCPT":
                    recipients.append(line.split(":", 1)[1].strip(" <>"))
                    await say("250 ok")
                elif verb == "DATA":
                    await say("354 go on")
                    lines = []
                    while (chunk := await reader.readline()) != b".\r\n":
                        lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    self.messages.append((sender, recipients, b"".join(lines)))
                    await say("250 queued")
                elif verb == "QUIT":
                    await say("221 bye")
                    break
                else:
                    await say("250 ok")
        finally:
            writer.close()


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    server = SmtpSink()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_smtp_delivers_the_same_message(tmp_path: Path, sink: SmtpSink) -> None:
    settings = Settings.load(
        environ={},
        data_dir=tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_security="none",
    )
    sender = mailer(settings)
    assert isinstance(sender, Smtp)
    message = participant_message(settings.mail_from, MEETING, "a", ROSA, DALE, "Sam", URL, NOW)
    where = await sender.send(message)
    assert where == f"127.0.0.1:{sink.port}"
    [(mail_from, recipients, data)] = sink.messages
    assert recipients == ["rosa@example.org"] and mail_from == "storyroom@localhost"
    received = parse(data)
    assert received["Subject"] == message["Subject"]
    assert ics_properties(calendar_of(received))["DTSTART"] == "20250603T230000Z"
    # without an SMTP host the default is the outbox folder
    assert isinstance(mailer(replace(settings, smtp_host="")), Outbox)


async def test_invitations_say_their_language_in_the_header(tmp_path: Path) -> None:
    """Content-Language survives set_content() and the calendar attachment: read back
    from the bytes the outbox wrote, on the message itself, for each reader."""
    outbox = Outbox(tmp_path / "outbox")
    written = {
        "rosa": participant_message("rooms@example.org", MEETING, "a", ROSA, DALE, "Sam", URL, NOW),
        "dale": participant_message("rooms@example.org", MEETING, "b", DALE, ROSA, "Sam", URL, NOW),
        "sam": facilitator_message("rooms@example.org", MEETING, SAM, ROSA, DALE, URL, NOW),
    }
    spanish = replace(SAM, language="es")
    written["sam_es"] = facilitator_message(
        "rooms@example.org", MEETING, spanish, ROSA, DALE, URL, NOW
    )
    expected = {"rosa": "es", "dale": "en", "sam": "en", "sam_es": "es"}
    for who, message in written.items():
        _, raw = await outbox.read(await outbox.send(message), EVERY_ORGANISATION)
        again = parse(raw)
        assert again["Content-Language"] == expected[who], who
        assert again.get_content_type() == "multipart/mixed"
        assert calendar_of(again)  # the calendar entry is still attached
