"""TURN credentials for seats: the ICE servers each seat's snapshot carries.

Participants on restrictive networks (UDP blocked, symmetric NAT) reach the server only
through a TURN relay. With a coturn `static-auth-secret` the server mints time-limited
credentials per seat (the TURN REST API convention coturn implements): the username is
`<unix expiry>:<session id>.<seat>` and the credential is base64(HMAC-SHA1(secret,
username)). coturn recomputes the HMAC, so the server and coturn share only the secret;
a credential names one seat of one session and stops working at its expiry, so a
leaked one is worth little. coturn checks the expiry on every request, refreshes
included, so the lifetime must outlast the longest session (`turn_ttl_s`).

Long-term static credentials (`turn_username`/`turn_password`) are the fallback for
TURN services without the REST API; every seat then gets the same pair.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from storyroom.config import IceServer, Settings


def rest_username(session_id: str, seat: str, expires_at: float) -> str:
    """coturn's REST username: the expiry first (it checks it), then who it is for."""
    return f"{int(expires_at)}:{session_id}.{seat}"


def rest_credential(secret: str, username: str) -> str:
    """What coturn computes from its `static-auth-secret` for `username`."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def seat_turn_server(
    settings: Settings, session_id: str, seat: str, now: float | None = None
) -> IceServer | None:
    """The TURN entry for one seat, or None when no TURN server is configured."""
    if not settings.turn_urls:
        return None
    if settings.turn_secret:
        expires_at = (time.time() if now is None else now) + settings.turn_ttl_s
        username = rest_username(session_id, seat, expires_at)
        return IceServer(
            urls=settings.turn_urls,
            username=username,
            credential=rest_credential(settings.turn_secret, username),
        )
    return IceServer(
        urls=settings.turn_urls,
        username=settings.turn_username,
        credential=settings.turn_password,
    )


def seat_ice_servers(
    settings: Settings, session_id: str, seat: str, now: float | None = None
) -> list[dict[str, Any]]:
    """`RTCIceServer` objects for one seat: the configured ones, then its own TURN entry."""
    servers = [server.to_json() for server in settings.ice_servers]
    turn = seat_turn_server(settings, session_id, seat, now)
    if turn is not None:
        servers.append(turn.to_json())
    return servers
