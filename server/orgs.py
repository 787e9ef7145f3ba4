"""Organisations: who owns a row, and which organisations' rows a reader may see.

Every session, application, facilitator, staff account and audit entry belongs to one
organisation (recordings, copies and exports through their session). A staff request
carries an `OrgScope` from its sign-in (`staff.accounts.StaffIdentity.scope`), and the
store functions that read owned rows take it and put it in their SQL: a row of another
organisation is never read, so it cannot be shown, counted or changed by mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT_ORG_ID = 1
"""The organisation every row made before organisations existed belongs to (migration 6)."""
DEFAULT_ORG_SLUG = "default"
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class OrgScope:
    """The organisations a reader may see: one (`org_id`), or every one (`None`: a
    platform admin, the operator's staff token, the server's own work)."""

    org_id: int | None

    @property
    def everything(self) -> bool:
        return self.org_id is None

    def where(self, column: str) -> tuple[str, tuple[Any, ...]]:
        """An SQL condition on `column` (an org_id column) and its parameters."""
        if self.org_id is None:
            return "1 = 1", ()
        return f"{column} = ?", (self.org_id,)

    def sees(self, org_id: int | None) -> bool:
        return self.org_id is None or org_id == self.org_id


EVERY_ORGANISATION = OrgScope(None)
"""For the server's own work (rooms, finalization, delivery) and platform admins."""


@dataclass(frozen=True, slots=True)
class Organisation:
    """An organisation that runs its own programme on this storyroom."""

    id: int
    slug: str
    name: str
    logo_url: str | None
    contact: str | None
    settings: dict[str, Any]
    created_at: float

    @property
    def signature(self) -> str:
        """How its emails end: its name and contact line ("storyroom" for the default
        organisation before it is given a name)."""
        return "\n".join(line for line in (self.name or "storyroom", self.contact) if line)

    def public_json(self) -> dict[str, Any]:
        """What participants' pages, invitations and copy pages show."""
        return {
            "slug": self.slug,
            "name": self.name,
            "logo_url": self.logo_url,
            "contact": self.contact,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.public_json(),
            "settings": self.settings,
            "created_at": self.created_at,
        }
