"""Field parsers shared by every boundary: room and session payloads, the staff archive,
the application form and staff accounts.

Each takes an untrusted value and returns it typed, or raises `InvalidInput` whose
message names the field and whose code the pages have words for. Boundaries that answer
every bad field at once (the application form) keep the code and drop the message.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeGuard

from storyroom.errors import InvalidInput

LANGUAGES = ("en", "es")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EMAIL_MAX = 254
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
PASSWORD_MIN = 10
PASSWORD_MAX = 1024


def obj(
    payload: Any, allowed: set[str], required: set[str], where: str = "payload"
) -> dict[str, Any]:
    """A JSON object with only `allowed` keys and every `required` one (None is `{}` when
    nothing is required)."""
    if payload is None and not required:
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidInput(f"{where} must be a JSON object", code="invalid_type")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} in {where}", code="unknown_field")
    missing = sorted(required - set(payload))
    if missing:
        raise InvalidInput(f"missing field {missing[0]!r} in {where}", code="missing_field")
    return payload


def known_keys(keys: Any, allowed: set[str], what: str) -> None:
    """Refuse the first key of a query that is not `allowed` ("unknown filter 'x'")."""
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise InvalidInput(f"unknown {what} {unknown[0]!r}", code="unknown_field")


def text(
    value: Any, field: str, max_len: int, *, allow_empty: bool = False, one_line: bool = False
) -> str:
    """Trimmed text of at most `max_len` characters, without control characters (line
    breaks and tabs are allowed unless `one_line`)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be text", code="invalid_type")
    value = value.strip()
    if not value and not allow_empty:
        raise InvalidInput(f"{field} must not be empty", code="invalid_value")
    if len(value) > max_len:
        raise InvalidInput(f"{field} is longer than {max_len} characters", code="too_long")
    spacing = "" if one_line else "\n\t"
    if any((ord(c) < 32 and c not in spacing) or c == "\x7f" for c in value):
        raise InvalidInput(f"{field} contains control characters", code="invalid_value")
    return value


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be true or false", code="invalid_type")
    return value


def flags(payload: Any, names: tuple[str, ...], where: str = "payload") -> dict[str, bool]:
    """An object of exactly the booleans `names`, each checked in that order."""
    given = obj(payload, set(names), set(names), where)
    return {name: boolean(given[name], name) for name in names}


def is_whole_number(value: Any) -> TypeGuard[int]:
    """An int that is not a bool (JSON true is not 1 here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(value: Any, field: str) -> int:
    if not is_whole_number(value):
        raise InvalidInput(f"{field} must be a whole number", code="invalid_type")
    return value


def identifier(value: Any, field: str, what: str = "an id") -> str:
    """An id as the server makes them (letters, digits, `_` and `-`, at most 64)."""
    if not isinstance(value, str) or not ID_RE.match(value):
        raise InvalidInput(f"{field} must be {what}", code="invalid_value")
    return value


def moment(value: Any, field: str) -> datetime:
    """A moment in ISO 8601 with its offset (`2026-12-10T18:00:00-05:00`), in UTC."""
    try:
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field} must be a date and time in ISO 8601 with its offset", code="invalid_time"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{field} must say its offset from UTC", code="invalid_time")
    return parsed.astimezone(UTC)


def language(value: Any) -> str:
    if value not in LANGUAGES:
        raise InvalidInput("language must be 'en' or 'es'", code="invalid_value")
    return str(value)


def email(value: Any) -> str:
    """An email address as typed, trimmed, on one line."""
    address = text(value, "email", EMAIL_MAX, one_line=True)
    if not EMAIL_RE.match(address):
        raise InvalidInput("that is not an email address", code="invalid_email")
    return address


def password(value: Any) -> str:
    """A new staff password: at least `PASSWORD_MIN` characters."""
    if not isinstance(value, str):
        raise InvalidInput("password must be text", code="invalid_type")
    if len(value) < PASSWORD_MIN:
        raise InvalidInput(
            f"the password must have at least {PASSWORD_MIN} characters", code="weak_password"
        )
    if len(value) > PASSWORD_MAX:
        raise InvalidInput("the password is too long", code="too_long")
    return value
