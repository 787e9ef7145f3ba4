"""HTTPS served by storyroom itself: the TLS context of `tls_cert`/`tls_key`."""

from __future__ import annotations

import ssl

from storyroom.config import Settings
from storyroom.errors import InvalidInput


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context when a certificate is configured; `InvalidInput` when the
    files do not hold a certificate chain and its key."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInput(
            f"tls_cert/tls_key: cannot load {settings.tls_cert} with {settings.tls_key}: {exc}"
        ) from None
    return context
