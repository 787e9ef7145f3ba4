"""Applications to be matched: the boundary where every payload of this module (the public
application form, facilitators, staff filters, scheduling requests) is parsed into typed
objects before anything is stored.

The public form answers every bad field at once (`FieldErrors`: field -> code) so the
page can show each message beside its field and keep everything the person typed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from storyroom import fields
from storyroom.errors import InvalidInput
from storyroom.matching.availability import SLOT_MINUTES, Window
from storyroom.matching.regions import regions
from storyroom.room.protocol import BIO_MAX, NAME_MAX

LAST_NAME_MAX = 60
PHONE_MAX = 30
CITY_MAX = 80
PARTY_MAX = 60
SHAPED_MAX = 1000
ACCESSIBILITY_MAX = 500
WINDOWS_MAX = 14
MIN_WINDOW_MINUTES = 90
PLACEMENT_RANGE = (1, 7)
HONEYPOT = "website"

PHONE_RE = re.compile(r"^\+?[0-9 ().\-/]+$")
TIME_RE = re.compile(r"^(\d{2}):(\d{2})$")


class Status(StrEnum):
    """An application's place in the flow."""

    NEW = "new"  # waiting for a match
    PROPOSED = "proposed"  # in a proposal staff have not decided yet
    MATCHED = "matched"  # in an accepted pair, not scheduled yet
    SCHEDULED = "scheduled"  # in a confirmed session
    WITHDRAWN = "withdrawn"


class FieldErrors(InvalidInput, code="invalid_fields"):
    """Several bad fields at once; `fields` maps each to a code the page has words for."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = dict(fields)
        first, code = next(iter(self.fields.items()))
        more = len(self.fields) - 1
        tail = f" (and {more} more)" if more else ""
        super().__init__(f"{first}: {code.replace('_', ' ')}{tail}")

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "fields": self.fields}


@dataclass(frozen=True, slots=True)
class ApplicationIn:
    first_name: str
    last_name: str
    email: str
    phone: str
    city: str
    region: str
    time_zone: str
    language: str  # the language we write to them in
    speaks: tuple[str, ...]
    placement: int
    party: str
    bio: str
    shaped_views: str
    availability: tuple[Window, ...]
    accessibility: str


@dataclass(frozen=True, slots=True)
class FacilitatorIn:
    first_name: str
    email: str
    language: str
    speaks: tuple[str, ...]
    time_zone: str
    availability: tuple[Window, ...]


@dataclass(frozen=True, slots=True)
class ApplicationFilter:
    region: str | None = None
    language: str | None = None
    placement: int | None = None
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class ScheduleIn:
    facilitator_id: str | None
    starts_at: datetime | None


APPLICATION_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "city",
    "region",
    "time_zone",
    "language",
    "speaks",
    "placement",
    "party",
    "bio",
    "shaped_views",
    "availability",
    "accessibility",
    "consent_contact",
    "consent_privacy",
    HONEYPOT,
)


class _Bad(InvalidInput):
    """One field's problem, as a code (the form answers with codes, not messages)."""

    def __init__(self, code: str) -> None:
        super().__init__(code.replace("_", " "), code=code)


@cache
def time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _blank(value: Any) -> bool:
    """A field left out or left empty: the form treats both the same."""
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any, max_len: int, *, required: bool, one_line: bool = False) -> str:
    if _blank(value):
        if required:
            raise _Bad("required")
        return ""
    return fields.text(value, "this field", max_len, one_line=one_line)


def _line(value: Any, max_len: int, *, required: bool) -> str:
    """Text on one line (names, city): no line breaks or tabs either."""
    return _text(value, max_len, required=required, one_line=True)


def _email(value: Any) -> str:
    if _blank(value):
        raise _Bad("required")
    return fields.email(value)


def _phone(value: Any) -> str:
    text = _line(value, PHONE_MAX, required=False)
    if text and (not PHONE_RE.match(text) or sum(c.isdigit() for c in text) < 7):
        raise _Bad("invalid_phone")
    return text


def _region(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("required" if value in (None, "") else "invalid_type")
    code = value.strip().upper()
    if code not in regions():
        raise _Bad("unknown_region")
    return code


def _choice(value: Any, allowed: Collection[str], unknown: str) -> str:
    """One of the values the form offers (a select): `unknown` for anything else."""
    if value is None or value == "":
        raise _Bad("required")
    if value not in allowed:
        raise _Bad(unknown)
    return str(value)


def _time_zone(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise _Bad("invalid_type")
    return _choice(value, time_zones(), "unknown_time_zone")


def _language(value: Any) -> str:
    return _choice(value, fields.LANGUAGES, "unknown_language")


def _items(value: Any) -> list[Any]:
    """A list with at least one item (boxes ticked, windows given)."""
    if value is None or value == []:
        raise _Bad("required")
    if not isinstance(value, list):
        raise _Bad("invalid_type")
    return value


def _speaks(value: Any) -> tuple[str, ...]:
    value = _items(value)
    if any(lang not in fields.LANGUAGES for lang in value) or len(set(value)) != len(value):
        raise _Bad("unknown_language")
    return tuple(sorted(value))


def _placement(value: Any) -> int:
    if value is None:
        raise _Bad("required")
    fields.whole_number(value, "placement")
    if not PLACEMENT_RANGE[0] <= value <= PLACEMENT_RANGE[1]:
        raise _Bad("invalid_placement")
    return value


def _clock(value: Any, *, end: bool) -> int:
    if not isinstance(value, str):
        raise _Bad("invalid_time")
    found = TIME_RE.match(value)
    if not found:
        raise _Bad("invalid_time")
    hours, minutes = int(found[1]), int(found[2])
    total = hours * 60 + minutes
    if minutes >= 60 or total > 24 * 60 or (total == 24 * 60 and not end):
        raise _Bad("invalid_time")
    if minutes % SLOT_MINUTES:
        raise _Bad("invalid_time")
    return total


def _availability(value: Any) -> tuple[Window, ...]:
    value = _items(value)
    if len(value) > WINDOWS_MAX:
        raise _Bad("too_many")
    windows = set()
    for item in value:
        if not isinstance(item, dict) or set(item) != {"day", "start", "end"}:
            raise _Bad("invalid_type")
        day = item["day"]
        if not fields.is_whole_number(day) or not 0 <= day <= 6:
            raise _Bad("invalid_day")
        start, finish = _clock(item["start"], end=False), _clock(item["end"], end=True)
        if finish <= start:
            raise _Bad("window_order")
        if finish - start < MIN_WINDOW_MINUTES:
            raise _Bad("window_too_short")
        windows.add(Window(day, start, finish))
    return tuple(sorted(windows))


def _consent(value: Any) -> bool:
    if value is not True:
        raise _Bad("consent_required")
    return True


def _collect(
    obj: Mapping[str, Any], parsers: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, parse in parsers.items():
        try:
            values[name] = parse(obj.get(name))
        except InvalidInput as bad:
            errors[name] = bad.code
    return values, errors


def _object(payload: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput("send a JSON object", code="invalid_type")
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise FieldErrors({name: "unknown_field" for name in unknown})
    return payload


def parse_application(payload: Any) -> ApplicationIn | None:
    """The public form. None when the hidden honeypot field was filled in (a bot)."""
    obj = _object(payload, APPLICATION_FIELDS)
    honeypot = obj.get(HONEYPOT)
    if honeypot not in (None, ""):
        return None
    values, errors = _collect(
        obj,
        {
            "first_name": lambda v: _line(v, NAME_MAX, required=True),
            "last_name": lambda v: _line(v, LAST_NAME_MAX, required=True),
            "email": _email,
            "phone": _phone,
            "city": lambda v: _line(v, CITY_MAX, required=True),
            "region": _region,
            "time_zone": _time_zone,
            "language": _language,
            "speaks": _speaks,
            "placement": _placement,
            "party": lambda v: _line(v, PARTY_MAX, required=False),
            "bio": lambda v: _text(v, BIO_MAX, required=True),
            "shaped_views": lambda v: _text(v, SHAPED_MAX, required=False),
            "availability": _availability,
            "accessibility": lambda v: _text(v, ACCESSIBILITY_MAX, required=False),
            "consent_contact": _consent,
            "consent_privacy": _consent,
        },
    )
    last, bio = values.get("last_name", ""), values.get("bio", "")
    if len(last) >= 2 and re.search(rf"(?<!\w){re.escape(last)}(?!\w)", bio, re.IGNORECASE):
        errors.setdefault("bio", "last_name_in_bio")
    if errors:
        raise FieldErrors(errors)
    values.pop("consent_contact")
    values.pop("consent_privacy")
    return ApplicationIn(**values)


def parse_facilitator(payload: Any) -> FacilitatorIn:
    obj = _object(
        payload, ("first_name", "email", "language", "speaks", "time_zone", "availability")
    )
    values, errors = _collect(
        obj,
        {
            "first_name": lambda v: _line(v, NAME_MAX, required=True),
            "email": _email,
            "language": _language,
            "speaks": _speaks,
            "time_zone": _time_zone,
            "availability": _availability,
        },
    )
    if errors:
        raise FieldErrors(errors)
    return FacilitatorIn(**values)


def parse_filter(query: Mapping[str, str]) -> ApplicationFilter:
    """Staff list filters from the query string; empty values mean "any"."""
    _object(dict(query), ("region", "language", "placement", "status"))
    values, errors = _collect(
        query,
        {
            "region": lambda v: _region(v) if v else None,
            "language": lambda v: _language(v) if v else None,
            "placement": lambda v: _placement(_whole(v)) if v else None,
            "status": lambda v: _status(v) if v else None,
        },
    )
    if errors:
        raise FieldErrors(errors)
    return ApplicationFilter(**values)


def _whole(value: str) -> int:
    if not value.isdigit():
        raise _Bad("invalid_type")
    return int(value)


def _status(value: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise _Bad("invalid_value") from None


def parse_schedule(payload: Any) -> ScheduleIn:
    """Staff's choice when planning a session: a facilitator and/or a start (ISO 8601 with
    an offset); each missing one is chosen by the server."""
    obj = _object(payload if payload is not None else {}, ("facilitator_id", "starts_at"))
    values, errors = _collect(
        obj,
        {
            "facilitator_id": lambda v: None if v is None else fields.identifier(v, "facilitator"),
            "starts_at": lambda v: None if v is None else _slot_start(v),
        },
    )
    if errors:
        raise FieldErrors(errors)
    return ScheduleIn(**values)


def parse_reschedule(payload: Any) -> datetime:
    """A confirmed session's new start: `{"starts_at"}` (ISO 8601 with an offset, on a
    slot boundary); its facilitator stays."""
    obj = _object(payload, ("starts_at",))
    values, errors = _collect(obj, {"starts_at": _slot_start})
    if errors:
        raise FieldErrors(errors)
    starts: datetime = values["starts_at"]
    return starts


def _slot_start(value: Any) -> datetime:
    """ISO 8601 with an offset, on a slot boundary; in UTC."""
    try:
        starts = fields.moment(value, "starts_at")
    except InvalidInput:
        raise _Bad("invalid_time") from None
    if starts.minute % SLOT_MINUTES or starts.second or starts.microsecond:
        raise _Bad("invalid_time")
    return starts
