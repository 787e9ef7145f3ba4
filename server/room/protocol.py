"""The boundary: every inbound payload (HTTP bodies, Socket.IO events) is parsed here
into typed objects before any state is touched. Unknown fields, wrong types, missing
fields and oversize values are refused with `InvalidInput` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storyroom import fields
from storyroom.errors import InvalidInput, PayloadTooLarge
from storyroom.seats import SessionKind

NAME_MAX = 40
BIO_MAX = 500
TITLE_MAX = 120
QUESTION_MAX = 400
QUESTIONS_MAX = 60
LABEL_MAX = 120
NOTE_MAX = 2000
SDP_MAX = 64_000
TARGET_MINUTES = (10, 120)
EVENT_MAX_BYTES = 96_000
QUESTION_ID = "a question id"


def check_size(payload: Any) -> None:
    """Refuse oversize Socket.IO payloads before parsing them."""
    try:
        size = len(json.dumps(payload))
    except (TypeError, ValueError):
        raise InvalidInput("payload is not JSON", code="invalid_type") from None
    if size > EVENT_MAX_BYTES:
        raise PayloadTooLarge(f"payload is larger than {EVENT_MAX_BYTES} bytes")


# -- HTTP ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PersonIn:
    name: str
    bio: str


@dataclass(frozen=True, slots=True)
class SessionIn:
    title: str
    language: str
    target_minutes: int
    participants: tuple[PersonIn, PersonIn]
    facilitator: PersonIn | None
    """None exactly when `kind` is self-guided."""
    questions: tuple[str, ...] | None
    starts_at: float | None = None  # the scheduled start (epoch seconds), if any
    kind: SessionKind = SessionKind.FACILITATED


def _person(value: Any, where: str, *, bio: bool) -> PersonIn:
    obj = fields.obj(value, {"name", "bio"}, {"name"}, where)
    name = fields.text(obj["name"], f"{where}.name", NAME_MAX)
    bio_text = fields.text(obj.get("bio", ""), f"{where}.bio", BIO_MAX, allow_empty=True)
    return PersonIn(name=name, bio=bio_text if (bio or "bio" in obj) else "")


def parse_session_create(payload: Any) -> SessionIn:
    obj = fields.obj(
        payload,
        {
            "title",
            "language",
            "target_minutes",
            "participants",
            "facilitator",
            "questions",
            "starts_at",
            "kind",
        },
        {"title", "participants"},
        "session",
    )
    kind = parse_kind(obj.get("kind", SessionKind.FACILITATED.value))
    title = fields.text(obj["title"], "title", TITLE_MAX)
    language = fields.language(obj.get("language", "en"))
    target = fields.whole_number(obj.get("target_minutes", 40), "target_minutes")
    if not TARGET_MINUTES[0] <= target <= TARGET_MINUTES[1]:
        raise InvalidInput(
            f"target_minutes must be between {TARGET_MINUTES[0]} and {TARGET_MINUTES[1]}",
            code="invalid_value",
        )
    people = obj["participants"]
    if not isinstance(people, list) or len(people) != 2:
        raise InvalidInput(
            "participants must be a list of exactly two people", code="invalid_value"
        )
    a = _person(people[0], "participants[0]", bio=True)
    b = _person(people[1], "participants[1]", bio=True)
    facilitator: PersonIn | None = None
    if kind is SessionKind.SELF_GUIDED:
        if obj.get("facilitator") is not None:
            raise InvalidInput(
                "a self-guided session has no facilitator; leave facilitator out",
                code="invalid_value",
            )
    elif "facilitator" not in obj:
        raise InvalidInput("missing field 'facilitator' in session", code="missing_field")
    else:
        facilitator = _person(obj["facilitator"], "facilitator", bio=False)
    questions: tuple[str, ...] | None = None
    if obj.get("questions") is not None:
        raw = obj["questions"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= QUESTIONS_MAX:
            raise InvalidInput(
                f"questions must be a list of 1 to {QUESTIONS_MAX} texts", code="invalid_value"
            )
        questions = tuple(
            fields.text(q, f"questions[{i}]", QUESTION_MAX) for i, q in enumerate(raw)
        )
    starts_at = None
    if obj.get("starts_at") is not None:
        starts_at = fields.moment(obj["starts_at"], "starts_at").timestamp()
    return SessionIn(title, language, target, (a, b), facilitator, questions, starts_at, kind)


def parse_kind(value: Any) -> SessionKind:
    """A session's kind: `facilitated` (the default) or `self_guided`."""
    if not isinstance(value, str):
        raise InvalidInput("kind must be text", code="invalid_type")
    try:
        return SessionKind(value)
    except ValueError:
        kinds = ", ".join(k.value for k in SessionKind)
        raise InvalidInput(f"kind must be one of {kinds}", code="invalid_value") from None


# -- Socket.IO events ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentIn:
    record: bool
    archive: bool
    public: bool


@dataclass(frozen=True, slots=True)
class ChooseIn:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CueIn:
    id: str


@dataclass(frozen=True, slots=True)
class MarkerIn:
    label: str


@dataclass(frozen=True, slots=True)
class NoteIn:
    text: str


@dataclass(frozen=True, slots=True)
class OfferIn:
    sdp: str
    type: str


def parse_consent(payload: Any) -> ConsentIn:
    return ConsentIn(**fields.flags(payload, ("record", "archive", "public")))


def parse_choose(payload: Any) -> ChooseIn:
    obj = fields.obj(payload, {"ids"}, {"ids"})
    ids = obj["ids"]
    if not isinstance(ids, list) or len(ids) > QUESTIONS_MAX:
        raise InvalidInput(
            f"ids must be a list of at most {QUESTIONS_MAX} question ids", code="invalid_type"
        )
    parsed = tuple(fields.identifier(i, f"ids[{n}]", QUESTION_ID) for n, i in enumerate(ids))
    if len(set(parsed)) != len(parsed):
        raise InvalidInput("ids must not repeat a question", code="invalid_value")
    return ChooseIn(parsed)


def parse_cue(payload: Any) -> CueIn:
    obj = fields.obj(payload, {"id"}, {"id"})
    return CueIn(fields.identifier(obj["id"], "id", QUESTION_ID))


def parse_marker(payload: Any) -> MarkerIn:
    obj = fields.obj(payload, {"label"}, set())
    return MarkerIn(fields.text(obj.get("label", "marker"), "label", LABEL_MAX))


def parse_note(payload: Any) -> NoteIn:
    obj = fields.obj(payload, {"text"}, {"text"})
    return NoteIn(fields.text(obj["text"], "text", NOTE_MAX))


def parse_empty(payload: Any) -> None:
    fields.obj(payload, set(), set())


def parse_offer(payload: Any) -> OfferIn:
    obj = fields.obj(payload, {"sdp", "type"}, {"sdp", "type"})
    if obj["type"] != "offer":
        raise InvalidInput("type must be 'offer'", code="invalid_value")
    sdp = obj["sdp"]
    if not isinstance(sdp, str):
        raise InvalidInput("sdp must be text", code="invalid_type")
    if len(sdp) > SDP_MAX:
        raise PayloadTooLarge(f"sdp is larger than {SDP_MAX} bytes", code="sdp_too_large")
    return OfferIn(sdp=sdp, type="offer")


def parse_token(auth: Any) -> str | None:
    """Connect-time auth: `{"token": "..."}`; None when missing or malformed."""
    if not isinstance(auth, Mapping):
        return None
    token = auth.get("token")
    if not isinstance(token, str) or not 16 <= len(token) <= 128:
        return None
    return token
