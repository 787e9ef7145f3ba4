"""One error taxonomy for every boundary (HTTP, Socket.IO, SDP, files).

A `UserError` is answered (HTTP JSON error or a negative ack) and the connection
stays usable. A `ProtocolError` or `AuthError` closes the Socket.IO connection.
Messages are plain words for people; details go to the log.
"""

from __future__ import annotations

from typing import Any


class StoryroomError(Exception):
    """Base of every error that is shown to a client."""

    status = 400
    code = "error"

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


class InvalidInput(UserError):
    status = 400
    code = "invalid"


class NotFound(UserError):
    status = 404
    code = "not_found"


class Forbidden(UserError):
    status = 403
    code = "forbidden"


class InvalidState(UserError):
    """The event is valid but not now (cue before recording, stop before start...)."""

    status = 409
    code = "invalid_state"


class PreconditionFailed(UserError):
    status = 409
    code = "precondition_failed"


class PayloadTooLarge(UserError):
    status = 413
    code = "too_large"


class Busy(UserError):
    status = 409
    code = "busy"


class AuthError(StoryroomError):
    """Missing, wrong or expired credentials."""

    status = 401
    code = "unauthorized"


class ProtocolError(StoryroomError):
    """A client that does not speak the protocol; its connection is closed."""

    code = "protocol_error"
