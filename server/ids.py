"""Ids and tokens the server makes.

Ids are the only things file paths are built from. A token is random (192 bits unless
said otherwise), shown once (in a link or a cookie) and stored only as its SHA-256:
tokens are high-entropy, so a fast hash is enough, there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 24


def new_id(prefix: str) -> str:
    """A server-generated id such as `rec_0123456789abcdef`."""
    return f"{prefix}_{secrets.token_hex(8)}"


def new_token(nbytes: int = TOKEN_BYTES) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """What is stored of a token (hex SHA-256)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())
