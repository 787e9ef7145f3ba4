"""Invitations from the public link: a person invites someone they know to a self-guided
conversation, without staff.

The published page (`/invite`) takes the person's first name and email and their
partner's; the server keeps the request and mails the person a confirmation link (the
email check: nothing is created for an address nobody reads). Opening it creates a
self-guided session and mails each of the two their own join link, in the chosen
language. Only when `self_guided_invites` is on; requests are rate-limited per client
address (`invite_rate_limit` an hour). Owner of the `partner_invites` table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from functools import cache
from importlib import resources
from typing import Any

from storyroom import fields
from storyroom.config import Settings
from storyroom.errors import AuthError, InvalidInput, InvalidState
from storyroom.ids import hash_token, new_id, new_token
from storyroom.orgs import DEFAULT_ORG_ID
from storyroom.room.protocol import NAME_MAX, PersonIn, SessionIn
from storyroom.room.sessions import CreatedSession, create_session
from storyroom.seats import SessionKind
from storyroom.store import ModuleMigrations, Store, fetch_one

CONFIRM_HOURS = 48
"""A confirmation link works this long after the request."""

TABLES = ModuleMigrations(
    "partner_invites",
    (
        """
        CREATE TABLE partner_invites (
            id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,  -- the confirmation link's token, hashed
            name TEXT NOT NULL,
            email TEXT NOT NULL,
            partner_name TEXT NOT NULL,
            partner_email TEXT NOT NULL,
            language TEXT NOT NULL,
            created_at REAL NOT NULL,
            confirmed_at REAL,
            session_id TEXT REFERENCES sessions(id) ON DELETE SET NULL
        );
        """,
    ),
)


@cache
def texts() -> dict[str, Any]:
    raw = resources.files("storyroom").joinpath("data/partner_invites.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


@dataclass(frozen=True, slots=True)
class PartnerInviteIn:
    """The published form: who invites whom, and in which language they will talk."""

    name: str
    email: str
    partner_name: str
    partner_email: str
    language: str


def parse_partner_invite(payload: Any) -> PartnerInviteIn:
    obj = fields.obj(
        payload,
        {"name", "email", "partner_name", "partner_email", "language"},
        {"name", "email", "partner_name", "partner_email"},
        "invitation",
    )
    spec = PartnerInviteIn(
        name=fields.text(obj["name"], "name", NAME_MAX, one_line=True),
        email=fields.email(obj["email"]),
        partner_name=fields.text(obj["partner_name"], "partner_name", NAME_MAX, one_line=True),
        partner_email=fields.email(obj["partner_email"]),
        language=fields.language(obj.get("language", "en")),
    )
    if spec.email.casefold() == spec.partner_email.casefold():
        raise InvalidInput(
            "the person you invite needs an email address of their own", code="same_email"
        )
    return spec


def parse_confirmation(payload: Any) -> str:
    obj = fields.obj(payload, {"token"}, {"token"}, "confirmation")
    token = obj["token"]
    if not isinstance(token, str) or not 16 <= len(token) <= 128:
        raise InvalidInput("token must be the text of the link", code="invalid_value")
    return token


@dataclass(frozen=True, slots=True)
class PendingInvite:
    id: str
    name: str
    email: str
    partner_name: str
    partner_email: str
    language: str
    created_at: float
    confirmed_at: float | None
    session_id: str | None


class PartnerInvites:
    """Requests, their confirmation and the session each one became."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def request(self, spec: PartnerInviteIn) -> tuple[str, EmailMessage]:
        """Keep the request; the confirmation message to send to its sender."""
        token = new_token()
        invite_id = new_id("inv")
        await self.store.db.execute(
            "INSERT INTO partner_invites (id, token_hash, name, email, partner_name,"
            " partner_email, language, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                invite_id,
                hash_token(token),
                spec.name,
                spec.email,
                spec.partner_name,
                spec.partner_email,
                spec.language,
                time.time(),
            ),
        )
        await self.store.db.commit()
        url = f"{self.settings.base_url}/invite#token={token}"
        t = texts()[spec.language]
        body = t["confirm_body"].format(name=spec.name, partner=spec.partner_name, url=url)
        return invite_id, self._message(
            spec.name, spec.email, t["confirm_subject"].format(partner=spec.partner_name), body
        )

    async def find(self, token: str) -> PendingInvite | None:
        row = await fetch_one(
            self.store.db,
            "SELECT id, name, email, partner_name, partner_email, language, created_at,"
            " confirmed_at, session_id FROM partner_invites WHERE token_hash = ?",
            (hash_token(token),),
        )
        return PendingInvite(*row) if row else None

    async def confirm(self, invite: PendingInvite) -> tuple[CreatedSession, list[EmailMessage]]:
        """The email is checked: the self-guided session, and each person's link message."""
        if invite.confirmed_at is not None:
            raise InvalidState("this invitation was confirmed already", code="already_confirmed")
        if time.time() > invite.created_at + CONFIRM_HOURS * 3600:
            raise AuthError(
                "this confirmation link has expired; please send the invitation again",
                code="link_expired",
            )
        # claimed first, so two openings of one link can never make two sessions
        cursor = await self.store.db.execute(
            "UPDATE partner_invites SET confirmed_at = ? WHERE id = ? AND confirmed_at IS NULL",
            (time.time(), invite.id),
        )
        await self.store.db.commit()
        if cursor.rowcount != 1:
            raise InvalidState("this invitation was confirmed already", code="already_confirmed")
        t = texts()[invite.language]
        spec = SessionIn(
            title=t["session_title"].format(name=invite.name, partner=invite.partner_name),
            language=invite.language,
            target_minutes=40,
            participants=(PersonIn(invite.name, ""), PersonIn(invite.partner_name, "")),
            facilitator=None,
            questions=None,
            kind=SessionKind.SELF_GUIDED,
        )
        # the published invitation page is the default organisation's for now
        created = await create_session(self.store, self.settings, spec, DEFAULT_ORG_ID)
        await self.store.db.execute(
            "UPDATE partner_invites SET session_id = ? WHERE id = ?", (created.id, invite.id)
        )
        await self.store.db.commit()
        mine = t["link_body"].format(
            name=invite.name, partner=invite.partner_name, url=created.urls["a"]
        )
        theirs = t["invited_body"].format(
            name=invite.partner_name, partner=invite.name, url=created.urls["b"]
        )
        return created, [
            self._message(invite.name, invite.email, t["link_subject"], mine),
            self._message(
                invite.partner_name,
                invite.partner_email,
                t["invited_subject"].format(partner=invite.name),
                theirs,
            ),
        ]

    def _message(self, name: str, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        sender_name, sender = parseaddr(self.settings.mail_from)
        message["From"] = str(Address(sender_name, addr_spec=sender))
        message["To"] = str(Address(name, addr_spec=to))
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=sender.partition("@")[2] or "localhost")
        message.set_content(body)
        return message
