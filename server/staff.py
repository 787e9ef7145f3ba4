"""Staff credentials: a bearer token from settings, or generated once into the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from aiohttp import web

from .errors import AuthError
from .seats import tokens_equal

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
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


def require_staff(request: web.Request, staff_token: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise AuthError("staff credentials are required")
    if not tokens_equal(credential.strip(), staff_token):
        raise AuthError("staff credentials are not valid")
