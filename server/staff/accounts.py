"""Staff accounts: people with an email and a password, signed in with a session cookie.

- Passwords are hashed with scrypt (memory-hard: 32 MiB and ~0.1 s per guess), in a
  thread, and compared in constant time; an unknown email costs the same as a wrong
  password.
- A sign-in makes a session: a random token in an HttpOnly, SameSite=Strict cookie
  (Secure when the public URL is https), stored only as its SHA-256, with an absolute
  lifetime, plus a CSRF token that every state-changing request made with the cookie
  must carry in `X-CSRF-Token` (checked in `staff.tokens.require_staff`; derived from the
  cookie's token, so stored nowhere). Sessions are kept in the database and mirrored in
  memory, so the check is synchronous and survives a restart.
- Sign-in attempts are limited per client address and failures per account
  (`limits`); the sign-in form itself is protected by a double-submit CSRF token.

Owner: app.py opens one `Accounts` in its cleanup context (`Services.accounts`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from storyroom import fields
from storyroom.config import Settings
from storyroom.errors import AuthError, Forbidden, InvalidInput
from storyroom.ids import hash_token, new_token, tokens_equal
from storyroom.limits import FailureLimit, RateLimit
from storyroom.store import ModuleMigrations, Store, fetch_all, fetch_one

log = logging.getLogger(__name__)

SESSION_COOKIE = "storyroom_staff"
SIGNIN_CSRF_COOKIE = "storyroom_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGNIN_WINDOW_S = 15 * 60.0
TOKEN_WINDOW_S = 10 * 60.0

# scrypt: N = 2^15, r = 8 -> 128 * N * r = 32 MiB per hash.
SCRYPT_LOG2_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SCRYPT_MAXMEM = 64 * 1024 * 1024

TABLES = ModuleMigrations(
    "staff",
    (
        """
        CREATE TABLE staff_users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            email TEXT NOT NULL UNIQUE,          -- lower case
            password_hash TEXT NOT NULL,         -- scrypt$log2n$r$p$salt$hash
            created_at REAL NOT NULL,
            password_changed_at REAL NOT NULL
        );
        CREATE TABLE staff_sessions (
            token_hash TEXT PRIMARY KEY,         -- SHA-256 of the cookie's token
            user_id INTEGER NOT NULL REFERENCES staff_users(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX staff_sessions_by_user ON staff_sessions(user_id);
        """,
    ),
)


# -- passwords ----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A self-describing scrypt hash with a fresh 16-byte salt. Blocking (~0.1 s)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=1 << SCRYPT_LOG2_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=SCRYPT_MAXMEM,
        dklen=SCRYPT_DKLEN,
    )
    return f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of `password` against `hash_password`'s output. Blocking."""
    try:
        scheme, log2n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(expected)
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=1 << int(log2n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, want)


def normalize_email(email: Any) -> str:
    """An account's email: an email address, in lower case."""
    return fields.email(email).lower()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session, derived from the cookie's secret token, so it is stored
    nowhere and the server can tell it to the session's own pages again."""
    key = session_token.encode("utf-8", "surrogatepass")
    return hmac.new(key, b"storyroom staff csrf", hashlib.sha256).hexdigest()


# -- accounts and sessions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaffUser:
    id: int
    email: str
    created_at: float


@dataclass(frozen=True, slots=True)
class StaffSession:
    token_hash: str
    user_id: int
    email: str
    csrf: str
    """Derived from the cookie's token when the session is looked up (`csrf_token`)."""
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class StaffIdentity:
    """Who made a staff request: a signed-in person, or a script with the staff token."""

    actor: str
    session: StaffSession | None = None

    @property
    def via(self) -> str:
        return "session" if self.session else "token"


TOKEN_ACTOR = "staff token"


class Accounts:
    """Staff users, their sessions, and the counters that slow down wrong credentials."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        # token hash -> (user id, email, created, expires); the CSRF token needs the token
        self._sessions: dict[str, tuple[int, str, float, float]] = {}
        self.signin_attempts = RateLimit(settings.signin_rate_limit, window=SIGNIN_WINDOW_S)
        self.signin_failures = FailureLimit(settings.signin_rate_limit, SIGNIN_WINDOW_S)
        self.tokens = FailureLimit(settings.bad_token_limit, TOKEN_WINDOW_S)
        self._dummy_hash: str | None = None

    @property
    def db(self) -> Any:
        return self.store.db

    async def load(self) -> None:
        """Forget expired sessions; keep the others in memory."""
        now = time.time()
        await self.db.execute("DELETE FROM staff_sessions WHERE expires_at <= ?", (now,))
        await self.db.commit()
        rows = await fetch_all(
            self.db,
            "SELECT s.token_hash, s.user_id, u.email, s.created_at, s.expires_at"
            " FROM staff_sessions s JOIN staff_users u ON u.id = s.user_id",
        )
        self._sessions = {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    # -- users ------------------------------------------------------------------------

    async def add_user(self, email: str, password: str) -> StaffUser:
        email = normalize_email(email)
        fields.password(password)
        encoded = await asyncio.to_thread(hash_password, password)
        now = time.time()
        if await self.user(email) is not None:
            raise InvalidInput(f"{email} already has an account", code="exists", status=409)
        row = await self.db.fetch_one(
            "INSERT INTO staff_users (email, password_hash, created_at, password_changed_at)"
            " VALUES (?, ?, ?, ?) RETURNING id",
            (email, encoded, now, now),
        )
        await self.db.commit()
        assert row is not None
        return StaffUser(int(row["id"]), email, now)

    async def set_password(self, email: str, password: str) -> None:
        """A new password; every session of that person ends."""
        email = normalize_email(email)
        fields.password(password)
        user = await self.user(email)
        if user is None:
            raise InvalidInput(f"{email} has no account", code="not_found", status=404)
        encoded = await asyncio.to_thread(hash_password, password)
        await self.db.execute(
            "UPDATE staff_users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
            (encoded, time.time(), user.id),
        )
        await self.db.execute("DELETE FROM staff_sessions WHERE user_id = ?", (user.id,))
        await self.db.commit()
        self._sessions = {k: s for k, s in self._sessions.items() if s[0] != user.id}

    async def user(self, email: str) -> StaffUser | None:
        row = await fetch_one(
            self.db, "SELECT id, email, created_at FROM staff_users WHERE email = ?", (email,)
        )
        return StaffUser(row[0], row[1], row[2]) if row else None

    async def users(self) -> list[StaffUser]:
        rows = await fetch_all(
            self.db, "SELECT id, email, created_at FROM staff_users ORDER BY email"
        )
        return [StaffUser(r[0], r[1], r[2]) for r in rows]

    # -- sign-in ------------------------------------------------------------------------

    async def sign_in(self, email: Any, password: Any, address: str) -> tuple[StaffSession, str]:
        """Check the password and open a session: (session, cookie token).

        Raises `RateLimited` when this address or account tried too often, else
        `AuthError` for any wrong email or password (the same answer for both)."""
        self.signin_attempts.hit(address)
        try:
            email = normalize_email(email)
        except InvalidInput:
            email = ""
        if email:
            self.signin_failures.check(email)
        if not isinstance(password, str) or not password or len(password) > fields.PASSWORD_MAX:
            password = ""
        row = await fetch_one(
            self.db, "SELECT id, password_hash FROM staff_users WHERE email = ?", (email,)
        )
        if row is None:
            # the same work as a real check, so timing does not tell who has an account
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(hash_password, secrets.token_hex(8))
            await asyncio.to_thread(verify_password, password, self._dummy_hash)
            ok = False
        else:
            ok = await asyncio.to_thread(verify_password, password, row[1]) and bool(password)
        if row is None or not ok:
            if email:
                self.signin_failures.fail(email)
            raise AuthError("that email and password do not match an account")
        self.signin_failures.clear(email)
        token = new_token(32)
        now = time.time()
        session = StaffSession(
            token_hash=hash_token(token),
            user_id=int(row[0]),
            email=email,
            csrf=csrf_token(token),
            created_at=now,
            expires_at=now + self.settings.staff_session_hours * 3600,
        )
        await self.db.execute(
            "INSERT INTO staff_sessions (token_hash, user_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (session.token_hash, session.user_id, now, session.expires_at),
        )
        await self.db.commit()
        self._sessions[session.token_hash] = (session.user_id, email, now, session.expires_at)
        return session, token

    async def sign_out(self, session: StaffSession) -> None:
        self._sessions.pop(session.token_hash, None)
        await self.db.execute(
            "DELETE FROM staff_sessions WHERE token_hash = ?", (session.token_hash,)
        )
        await self.db.commit()

    def session_for(self, token: str | None) -> StaffSession | None:
        """The live session a cookie's token opens, if any. Synchronous (memory)."""
        if not token or len(token) > 128:
            return None
        token_hash = hash_token(token)
        found = self._sessions.get(token_hash)
        if found is None:
            return None
        user_id, email, created_at, expires_at = found
        if expires_at <= time.time():
            self._sessions.pop(token_hash, None)
            return None
        return StaffSession(token_hash, user_id, email, csrf_token(token), created_at, expires_at)

    # -- cookies --------------------------------------------------------------------------

    def secure_cookies(self, request: web.Request) -> bool:
        return request.secure or self.settings.base_url.startswith("https://")

    def set_session_cookie(
        self, request: web.Request, response: web.StreamResponse, token: str
    ) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(self.settings.staff_session_hours * 3600),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies(request),
        )

    def clear_session_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        response.del_cookie(
            SESSION_COOKIE,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies(request),
        )

    def signin_csrf(self, request: web.Request, response: web.StreamResponse) -> str:
        """The sign-in form's CSRF token: in a cookie and in the page (double submit)."""
        token = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
        if not 32 <= len(token) <= 64:
            token = new_token(32)
        response.set_cookie(
            SIGNIN_CSRF_COOKIE,
            token,
            path="/api/staff/",
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies(request),
        )
        return token

    def check_signin_csrf(self, request: web.Request) -> None:
        check_origin(request, self.settings)
        cookie = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
        sent = request.headers.get(CSRF_HEADER, "")
        if not cookie or not sent or not tokens_equal(cookie, sent):
            raise Forbidden("the sign-in form has expired: reload the page", code="csrf_failed")


def check_origin(request: web.Request, settings: Settings) -> None:
    """A state-changing request from a browser must come from one of our own pages."""
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a cross-site browser request (browsers send Origin on those)
    host = urlsplit(origin).netloc
    if origin == "null" or host not in (request.host, urlsplit(settings.base_url).netloc):
        raise Forbidden("this request came from another site", code="csrf_failed")


def check_csrf(request: web.Request, session: StaffSession, settings: Settings) -> None:
    """Cookie-authenticated requests that change state carry the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    check_origin(request, settings)
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not tokens_equal(sent, session.csrf):
        raise Forbidden("the form has expired: reload the page", code="csrf_failed")
