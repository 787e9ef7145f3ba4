"""Payloads of organisations and their staff accounts, parsed once at the edge into typed
objects (`web.organisations` answers them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from storyroom import fields
from storyroom.errors import InvalidInput
from storyroom.orgs import SLUG_RE
from storyroom.staff.accounts import Role, normalize_email

NAME_MAX = 120
CONTACT_MAX = 200
URL_MAX = 500
SETTINGS = {"address", "contact_name", "contact_email", "contact_phone"}
"""What an organisation may set for itself: how its BagIt exports name it
(Organization-Address, Contact-Name, Contact-Email, Contact-Phone; the contact line
stands in for the name)."""


@dataclass(frozen=True, slots=True)
class OrganisationIn:
    slug: str
    name: str
    logo_url: str | None
    contact: str | None
    settings: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StaffAccountIn:
    email: str
    password: str
    role: Role
    organisation: str | None
    """A slug: only a platform admin may name an organisation other than their own."""


def slug(value: Any, field: str = "slug") -> str:
    """An organisation's slug: lower-case letters, digits and inner hyphens, 1-40."""
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise InvalidInput(
            f"{field} must be 1 to 40 lower-case letters, digits and hyphens",
            code="invalid_value",
        )
    return value


def _logo_url(value: Any) -> str | None:
    if value is None:
        return None
    url = fields.text(value, "logo_url", URL_MAX, one_line=True)
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise InvalidInput("logo_url must be an https:// address", code="invalid_value")
    return url


def _settings(value: Any) -> dict[str, Any]:
    given = fields.obj(value, SETTINGS, set(), "settings")
    out: dict[str, Any] = {}
    for name in sorted(SETTINGS):
        if given.get(name) is not None:
            out[name] = fields.text(given[name], f"settings.{name}", CONTACT_MAX, one_line=True)
    if "contact_email" in out:
        out["contact_email"] = fields.email(out["contact_email"])
    return out


def parse_organisation(payload: Any) -> OrganisationIn:
    obj = fields.obj(
        payload,
        {"slug", "name", "logo_url", "contact", "settings"},
        {"slug", "name"},
        "organisation",
    )
    contact = obj.get("contact")
    return OrganisationIn(
        slug=slug(obj["slug"]),
        name=fields.text(obj["name"], "name", NAME_MAX, one_line=True),
        logo_url=_logo_url(obj.get("logo_url")),
        contact=fields.text(contact, "contact", CONTACT_MAX, one_line=True)
        if contact is not None
        else None,
        settings=_settings(obj.get("settings")),
    )


def parse_staff_account(payload: Any) -> StaffAccountIn:
    obj = fields.obj(
        payload, {"email", "password", "role", "organisation"}, {"email", "password"}, "account"
    )
    role = obj.get("role", Role.STAFF.value)
    if role not in (Role.STAFF.value, Role.ADMIN.value):
        # platform admins are made on the command line, by whoever runs the server
        raise InvalidInput("role must be 'staff' or 'admin'", code="invalid_value")
    organisation = obj.get("organisation")
    return StaffAccountIn(
        email=normalize_email(obj["email"]),
        password=fields.password(obj["password"]),
        role=Role(role),
        organisation=slug(organisation, "organisation") if organisation is not None else None,
    )
