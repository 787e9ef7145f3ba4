"""Reading what the server mailed: the outbox folder's `.eml` files, parsed."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path


def outbox_messages(folder: Path) -> list[EmailMessage]:
    """Every message in the outbox folder (in no particular order within one second)."""
    paths = sorted(folder.glob("*.eml")) if folder.is_dir() else []
    parser = BytesParser(policy=email.policy.default)
    messages = [parser.parsebytes(path.read_bytes()) for path in paths]
    return [m for m in messages if isinstance(m, EmailMessage)]


def plain_text(message: EmailMessage) -> str:
    """The message's text part, decoded."""
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())
