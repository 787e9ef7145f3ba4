"""The staff archive's boundary: every payload and query of the staff and participant-copy
routes is parsed here into typed objects before anything is touched (like `protocol`
does for sessions and the room). Unknown fields, wrong types and oversize values are
refused with `InvalidInput` naming the field.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storyroom import fields
from storyroom.archive.clips import CLIP_MAX_S, CLIP_MIN_S, ClipRange
from storyroom.errors import InvalidInput
from storyroom.room.protocol import NAME_MAX
from storyroom.seats import PARTICIPANT_SEATS
from storyroom.status import PUBLIC_STATUSES

META_TITLE_MAX = 200
DESCRIPTION_MAX = 5000
LOCATION_MAX = 200
KEYWORD_MAX = 60
KEYWORDS_MAX = 30
NOTE_MAX = 500
QUERY_MAX = 200
CONSENT_KINDS = ("archive", "public", "copies")


@dataclass(frozen=True, slots=True)
class SignInIn:
    email: Any
    password: Any


def parse_signin(payload: Any) -> SignInIn:
    """Shape only: a wrong email or password gets the same answer as a wrong account."""
    obj = fields.obj(payload, {"email", "password"}, {"email", "password"}, "sign-in")
    return SignInIn(obj["email"], obj["password"])


@dataclass(frozen=True, slots=True)
class MetadataIn:
    """The editable catalogue fields; None leaves a field as it is."""

    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] | None = None
    location: str | None = None

    def changed(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("title", "description", "keywords", "location"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


def parse_metadata(payload: Any) -> MetadataIn:
    obj = fields.obj(payload, {"title", "description", "keywords", "location"}, set(), "metadata")
    if not obj:
        raise InvalidInput("send at least one field to change", code="missing_field")
    keywords: tuple[str, ...] | None = None
    if "keywords" in obj:
        raw = obj["keywords"]
        if not isinstance(raw, list) or len(raw) > KEYWORDS_MAX:
            raise InvalidInput(
                f"keywords must be a list of at most {KEYWORDS_MAX} words", code="invalid_type"
            )
        seen: dict[str, str] = {}
        for i, word in enumerate(raw):
            text = fields.text(word, f"keywords[{i}]", KEYWORD_MAX)
            seen.setdefault(text.casefold(), text)
        keywords = tuple(seen.values())
    return MetadataIn(
        title=fields.text(obj["title"], "title", META_TITLE_MAX) if "title" in obj else None,
        description=(
            fields.text(obj["description"], "description", DESCRIPTION_MAX, allow_empty=True)
            if "description" in obj
            else None
        ),
        keywords=keywords,
        location=(
            fields.text(obj["location"], "location", LOCATION_MAX, allow_empty=True)
            if "location" in obj
            else None
        ),
    )


@dataclass(frozen=True, slots=True)
class StaffConsentIn:
    """Staff write down a participant's consent as they gave it (phone, email, paper)."""

    seat: str
    archive: bool | None
    public: bool | None
    copies: bool | None
    note: str


def parse_staff_consent(payload: Any) -> StaffConsentIn:
    obj = fields.obj(payload, {"seat", *CONSENT_KINDS, "note"}, {"seat", "note"}, "consent")
    if obj["seat"] not in PARTICIPANT_SEATS:
        raise InvalidInput("seat must be 'a' or 'b'", code="invalid_value")
    values = {k: fields.boolean(obj[k], k) if k in obj else None for k in CONSENT_KINDS}
    if all(v is None for v in values.values()):
        raise InvalidInput("send archive, public or copies", code="missing_field")
    return StaffConsentIn(
        seat=obj["seat"],
        archive=values["archive"],
        public=values["public"],
        copies=values["copies"],
        note=fields.text(obj["note"], "note", NOTE_MAX),
    )


@dataclass(frozen=True, slots=True)
class ParticipantConsentIn:
    archive: bool
    public: bool


def parse_participant_consent(payload: Any) -> ParticipantConsentIn:
    return ParticipantConsentIn(**fields.flags(payload, ("archive", "public"), "consent"))


@dataclass(frozen=True, slots=True)
class ContactIn:
    """Where a participant's copy goes, as staff type it in."""

    email: str
    language: str


def parse_contact(payload: Any) -> ContactIn:
    obj = fields.obj(payload, {"email", "language"}, {"email", "language"}, "contact")
    return ContactIn(fields.email(obj["email"]), fields.language(obj["language"]))


@dataclass(frozen=True, slots=True)
class SearchIn:
    """Recording list filters; every one optional, all must match."""

    text: str = ""
    said: str = ""
    """Words said in the recording (its transcript; every word, in one turn)."""
    name: str = ""
    keyword: str = ""
    language: str = ""
    status: str = ""
    consent: str = ""
    date_from: float | None = None
    date_to: float | None = None


def _date(value: str, field: str, end: bool) -> float:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field} must be a date like 2026-05-01", code="invalid_value"
        ) from None
    if end:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()


def parse_search(query: Mapping[str, str]) -> SearchIn:
    allowed = {"q", "said", "name", "keyword", "language", "status", "consent", "from", "to"}
    fields.known_keys(query, allowed, "filter")

    def text(key: str, limit: int = QUERY_MAX) -> str:
        return fields.text(query.get(key, ""), key, limit, allow_empty=True)

    language = text("language")
    if language:
        fields.language(language)
    status = text("status")
    if status and status not in PUBLIC_STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(PUBLIC_STATUSES)}", code="invalid_value"
        )
    consent = text("consent")
    if consent and consent not in CONSENT_KINDS:
        raise InvalidInput("consent must be archive, public or copies", code="invalid_value")
    return SearchIn(
        text=text("q"),
        said=text("said"),
        name=text("name", NAME_MAX),
        keyword=text("keyword", KEYWORD_MAX),
        language=language,
        status=status,
        consent=consent,
        date_from=_date(query["from"], "from", end=False) if query.get("from") else None,
        date_to=_date(query["to"], "to", end=True) if query.get("to") else None,
    )


@dataclass(frozen=True, slots=True)
class AuditQueryIn:
    limit: int
    before: int | None
    action: str | None
    target: str | None


def parse_audit_query(query: Mapping[str, str], actions: tuple[str, ...]) -> AuditQueryIn:
    fields.known_keys(query, {"limit", "before", "action", "target"}, "filter")
    try:
        limit = int(query.get("limit", "100"))
        before = int(query["before"]) if query.get("before") else None
    except ValueError:
        raise InvalidInput("limit and before must be whole numbers", code="invalid_value") from None
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", code="invalid_value")
    action = query.get("action") or None
    if action is not None and action not in actions:
        raise InvalidInput("unknown action", code="invalid_value")
    target = query.get("target") or None
    if target is not None:
        fields.identifier(target, "target")
    return AuditQueryIn(limit, before, action, target)


def _seconds(value: Any, field: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInput(f"{field} must be a number of seconds", code="invalid_type")
    if not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number", code="invalid_value")
    return float(value)


def parse_clip(payload: Any, duration_s: float) -> ClipRange:
    """A clip's range (`{"start_s", "end_s"}`, seconds) inside a recording of
    `duration_s`: forwards, at least `CLIP_MIN_S` and at most `CLIP_MAX_S` long."""
    obj = fields.obj(payload, {"start_s", "end_s"}, {"start_s", "end_s"}, "clip")
    start, end = _seconds(obj["start_s"], "start_s"), _seconds(obj["end_s"], "end_s")
    if end <= start:
        raise InvalidInput("end_s must come after start_s", code="invalid_range")
    if end - start > CLIP_MAX_S:
        raise InvalidInput(
            f"a clip is at most {CLIP_MAX_S / 60:g} minutes long", code="clip_too_long"
        )
    if end - start < CLIP_MIN_S:
        raise InvalidInput(f"a clip is at least {CLIP_MIN_S:g} second long", code="clip_too_short")
    if start < 0 or end > duration_s + 1e-3:
        raise InvalidInput(
            f"the clip must lie within the recording (0 to {duration_s:.1f} s)",
            code="out_of_range",
        )
    return ClipRange(start, min(end, duration_s))
