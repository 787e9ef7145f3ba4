"""Sending mail: through SMTP when it is configured, else (the embedded default) into an
outbox folder in the data directory, one RFC 5322 `.eml` file per message, which staff
can list and read.

File names are generated here (time + random id) and files are created exclusively;
names coming back from staff are checked against that pattern and the folder listing,
never used as paths as given. Blocking work (files, SMTP) runs off the event loop.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import os
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Protocol

from storyroom.config import Settings
from storyroom.errors import NotFound
from storyroom.ids import new_id
from storyroom.records import FieldsRecord

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^\d{8}T\d{6}Z-msg_[0-9a-f]{16}\.eml$")


class Mailer(Protocol):
    via: str

    async def send(self, message: EmailMessage) -> str:
        """Send `message`; returns where it went (an outbox name or the SMTP server)."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxEntry(FieldsRecord):
    name: str
    bytes: int
    to: str
    subject: str
    date: str


class Outbox:
    """The outbox folder: `<data dir>/outbox/*.eml`."""

    via = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: EmailMessage) -> str:
        return await asyncio.to_thread(self._write, message)

    def _write(self, message: EmailMessage) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{new_id('msg')}.eml"
        data = message.as_bytes(policy=email.policy.SMTP)
        # Written under a hidden name and renamed whole: whoever lists the outbox (staff,
        # a mail relay picking files up) never reads half a message.
        part = self.folder / f".{name}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(part, self.folder / name)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return name

    async def entries(self) -> list[OutboxEntry]:
        return await asyncio.to_thread(self._entries)

    def _entries(self) -> list[OutboxEntry]:
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.iterdir(), reverse=True):
            if not NAME_RE.match(path.name) or not path.is_file():
                continue
            message = _parse(path.read_bytes())
            out.append(
                OutboxEntry(
                    path.name,
                    path.stat().st_size,
                    str(message.get("To", "")),
                    str(message.get("Subject", "")),
                    str(message.get("Date", "")),
                )
            )
        return out

    def path(self, name: str) -> Path:
        """The file of a listed message; NotFound for anything else."""
        if not NAME_RE.match(name):
            raise NotFound("no such message")
        path = self.folder / name
        if not path.is_file():
            raise NotFound("no such message")
        return path

    async def read(self, name: str) -> tuple[EmailMessage, bytes]:
        path = self.path(name)
        data = await asyncio.to_thread(path.read_bytes)
        return _parse(data), data


class Smtp:
    """An SMTP relay (STARTTLS, TLS or plain, with optional login)."""

    via = "smtp"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> str:
        return await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> str:
        s = self.settings
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if s.smtp_security == "ssl":
            client = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=30, context=context)
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
        with client:
            if s.smtp_security == "starttls":
                client.starttls(context=context)
            if s.smtp_user:
                client.login(s.smtp_user, s.smtp_password)
            client.send_message(message)
        return f"{s.smtp_host}:{s.smtp_port}"


def mailer(settings: Settings) -> Mailer:
    """SMTP when a host is configured, else the outbox folder."""
    if settings.smtp_host:
        return Smtp(settings)
    return Outbox(settings.outbox_dir)


async def deliver(mailer: Mailer, settings: Settings, message: EmailMessage) -> dict[str, str]:
    """Send `message`: `{"via", "ref"}`. When SMTP fails the message is kept in the outbox
    (with `"error": "smtp_failed"`) so the link it carries is not lost."""
    try:
        return {"via": mailer.via, "ref": await mailer.send(message)}
    except (OSError, smtplib.SMTPException) as exc:
        if isinstance(mailer, Outbox):
            raise
        log.warning("sending a message failed (%s); kept in the outbox instead", exc)
        name = await Outbox(settings.outbox_dir).send(message)
        return {"via": "outbox", "ref": name, "error": "smtp_failed"}


def _parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def describe(message: EmailMessage) -> dict[str, Any]:
    """A message for the staff page: headers, the text body, attachments by name."""
    body = message.get_body(preferencelist=("plain",))
    attachments = [
        {
            "filename": part.get_filename() or "",
            "content_type": part.get_content_type(),
            "bytes": len(part.get_payload(decode=True) or b""),
        }
        for part in message.iter_attachments()
        if isinstance(part, EmailMessage)
    ]
    return {
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "subject": str(message.get("Subject", "")),
        "date": str(message.get("Date", "")),
        "message_id": str(message.get("Message-ID", "")),
        "text": body.get_content() if isinstance(body, EmailMessage) else "",
        "attachments": attachments,
    }
