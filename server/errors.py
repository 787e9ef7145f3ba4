"""One error taxonomy for every boundary (HTTP, Socket.IO, SDP, files).

A `UserError` is answered (HTTP JSON error or a negative ack) and the connection
stays usable. A `ProtocolError` or `AuthError` closes the Socket.IO connection.
Messages are plain words for people; details go to the log.
"""

from __future__ import annotations

from typing import Any


class StoryroomError(Exception):
    """Base of every error that is shown to a client.

    A subclass states its HTTP status and code once, in its class line
    (`class NotFound(UserError, status=404, code="not_found")`); one raise may
    override either for itself."""

    status = 400
    code = "error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None) -> None:
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class UserError(StoryroomError):
    """A request that cannot be carried out; the connection stays open."""


class InvalidInput(UserError, code="invalid"):
    """A payload or field that is malformed, of the wrong type or out of range."""


class NotFound(UserError, status=404, code="not_found"):
    """No such thing, or none the caller may know of."""


class Forbidden(UserError, status=403, code="forbidden"):
    """Not for this caller (a participant cueing a question)."""


class InvalidState(UserError, status=409, code="invalid_state"):
    """The event is valid but not now (cue before recording, stop before start...)."""


class PreconditionFailed(UserError, status=409, code="precondition_failed"):
    """Allowed, but something else must happen first (everyone seated before recording)."""


class PayloadTooLarge(UserError, status=413, code="too_large"):
    """Larger than the boundary takes."""


class Busy(UserError, status=409, code="busy"):
    """The same thing is already under way (an offer being answered)."""


class AuthError(StoryroomError, status=401, code="unauthorized"):
    """Missing, wrong or expired credentials."""


class ProtocolError(StoryroomError, code="protocol_error"):
    """A client that does not speak the protocol; its connection is closed."""
