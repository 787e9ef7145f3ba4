"""Staff credentials: a bearer token from settings (or generated once into the data dir)
for scripts, or a signed-in staff member's session cookie (`accounts`) for the pages."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from storyroom.errors import AuthError
from storyroom.ids import new_token, tokens_equal
from storyroom.staff.accounts import (
    SESSION_COOKIE,
    TOKEN_ACTOR,
    Accounts,
    StaffIdentity,
    check_csrf,
)

TOKEN_FILE = "staff-token"


def load_or_create_staff_token(data_dir: Path, configured: str) -> tuple[str, bool]:
    """Return (token, created). A generated token is written with mode 0600."""
    if configured:
        return configured, False
    path = data_dir / TOKEN_FILE
    try:
        return path.read_text("utf-8").strip(), False
    except FileNotFoundError:
        pass
    token = new_token(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


async def require_staff(
    request: web.Request, staff_token: str, accounts: Accounts
) -> StaffIdentity:
    """Let staff through, else raise `AuthError` (401).

    Scripts send `Authorization: Bearer <staff token>`; the staff pages send the session
    cookie of a signed-in person, and then a state-changing request must also carry the
    session's CSRF token (`Forbidden`, 403, without it). Wrong tokens are counted per
    client address; too many and that address is refused for a while (`RateLimited`).
    Called by the HTTP edge's staff guard (`web.routes`), never by a handler.
    """
    header = request.headers.get("Authorization")
    if header is not None:
        address = request.remote or "unknown"
        accounts.tokens.check(address)
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthError("staff credentials are required")
        if not tokens_equal(credential, staff_token):
            accounts.tokens.fail(address)
            raise AuthError("staff credentials are not valid")
        return StaffIdentity(TOKEN_ACTOR)
    session = await accounts.session_for(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise AuthError("staff credentials are required")
    check_csrf(request, session, accounts.settings)
    return StaffIdentity(session.email, session)
