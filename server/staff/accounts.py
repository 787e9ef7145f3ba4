"""Staff accounts: people with an email and a password, signed in with a session cookie.

- Passwords are hashed with scrypt (memory-hard: 32 MiB and ~0.1 s per guess), in a
  thread, and compared in constant time; an unknown email costs the same as a wrong
  password.
- A sign-in makes a session: a random token in an HttpOnly, SameSite=Strict cookie
  (Secure when the public URL is https), stored only as its SHA-256, with an absolute
  lifetime, plus a CSRF token that every state-changing request made with the cookie
  must carry in `X-CSRF-Token` (checked in `staff.tokens.require_staff`; derived from the
  cookie's token, so stored nowhere). Sessions are kept in the database and mirrored in
  memory; a session this process has not seen (signed in on another node) is read from
  the database, and in a cluster a mirrored one is read again after
  `SESSION_RECHECK_S`.
- Every way a session ends (sign-out, a new password, a removed account) is told to
  `on_revoked` listeners as a `Revocation`: the fan-out (`storyroom.fanout`) carries it
  to every node, which forgets the sessions and hangs up their staff sockets.
- Sign-in attempts are limited per client address and failures per account
  (`limits`); each failure is told to `on_signin_failure` listeners as well, which carry
  it to the other nodes, so an account's lockout holds on all of them. The sign-in form
  itself is protected by a double-submit CSRF token.

Owner: app.py opens one `Accounts` in its cleanup context (`Services.accounts`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from storyroom import fields
from storyroom.config import Settings
from storyroom.errors import AuthError, Forbidden, InvalidInput, NotFound
from storyroom.ids import hash_token, new_token, tokens_equal
from storyroom.limits import FailureLimit, RateLimit
from storyroom.orgs import DEFAULT_ORG_ID, EVERY_ORGANISATION, OrgScope
from storyroom.store import ModuleMigrations, Store, fetch_all, fetch_one

log = logging.getLogger(__name__)

SESSION_COOKIE = "storyroom_staff"
SIGNIN_CSRF_COOKIE = "storyroom_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGNIN_WINDOW_S = 15 * 60.0
SESSION_RECHECK_S = 30.0
"""With a shared database, how long a session mirrored in memory is trusted before it
is read again: the bound on a sign-out elsewhere whose message this node missed."""
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
        # 2: each account belongs to an organisation, with a role in it; the accounts made
        # before organisations run the default organisation (its admins)
        """
        ALTER TABLE staff_users ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE staff_users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
        """,
    ),
)


class Role(StrEnum):
    """What a staff account may do: `staff` works with its organisation's data, `admin`
    also adds and removes its organisation's staff and facilitators, `platform` creates
    organisations and sees across them."""

    STAFF = "staff"
    ADMIN = "admin"
    PLATFORM = "platform"


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
    org_id: int = DEFAULT_ORG_ID
    role: Role = Role.ADMIN

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "created_at": self.created_at,
            "org_id": self.org_id,
            "role": self.role.value,
        }


@dataclass(frozen=True, slots=True)
class StaffSession:
    token_hash: str
    user_id: int
    email: str
    csrf: str
    """Derived from the cookie's token when the session is looked up (`csrf_token`)."""
    created_at: float
    expires_at: float
    org_id: int = DEFAULT_ORG_ID
    role: Role = Role.ADMIN


@dataclass(frozen=True, slots=True)
class StaffIdentity:
    """Who made a staff request: a signed-in person (with their organisation and role,
    from the sign-in), or a script with the operator's staff token (a platform admin)."""

    actor: str
    session: StaffSession | None = None

    @property
    def via(self) -> str:
        return "session" if self.session else "token"

    @property
    def org_id(self) -> int:
        return self.session.org_id if self.session else DEFAULT_ORG_ID

    @property
    def role(self) -> Role:
        return self.session.role if self.session else Role.PLATFORM

    @property
    def scope(self) -> OrgScope:
        """Whose data this request may read: its organisation's, or every one's."""
        return EVERY_ORGANISATION if self.role is Role.PLATFORM else OrgScope(self.org_id)

    def admin_of(self, org_id: int) -> bool:
        """May this person add and remove `org_id`'s staff and facilitators?"""
        return self.role is Role.PLATFORM or (self.role is Role.ADMIN and org_id == self.org_id)


@dataclass(frozen=True, slots=True)
class Revocation:
    """Staff sessions that ended: one (`token_hash`, a sign-out) or every one of an
    account (`user_id`: a new password, a removed account)."""

    token_hash: str | None = None
    user_id: int | None = None

    def ends(self, session: StaffSession) -> bool:
        return session.token_hash == self.token_hash or session.user_id == self.user_id


RevocationListener = Callable[[Revocation], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SigninFailure:
    """A wrong password for an account (`cleared`: a right one, which forgets the
    failures), told to the other nodes so that an account's budget of wrong passwords
    is one across them. `account` is the SHA-256 of the email, never the email."""

    account: str
    cleared: bool = False


SigninFailureListener = Callable[[SigninFailure], Awaitable[None]]

TOKEN_ACTOR = "staff token"
_USER_COLUMNS = "id, email, created_at, org_id, role"


def _user(row: Any) -> StaffUser:
    return StaffUser(row[0], row[1], row[2], row[3], Role(row[4]))


_SESSION_QUERY = (
    "SELECT s.token_hash, s.user_id, u.email, s.created_at, s.expires_at, u.org_id, u.role"
    " FROM staff_sessions s JOIN staff_users u ON u.id = s.user_id"
)


def _session(row: Any) -> StaffSession:
    """A session row of `_SESSION_QUERY`, without its CSRF token (that needs the cookie)."""
    return StaffSession(row[0], row[1], row[2], "", row[3], row[4], row[5], Role(row[6]))


class Accounts:
    """Staff users, their sessions, and the counters that slow down wrong credentials."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        # token hash -> the session without its CSRF token (that needs the cookie's token)
        self._sessions: dict[str, StaffSession] = {}
        # token hash -> when it was last read from the database (time.monotonic())
        self._read_at: dict[str, float] = {}
        # several processes share a PostgreSQL database: another may end a session
        self._shared = bool(settings.database_url)
        self._revoked_listeners: list[RevocationListener] = []
        self._failure_listeners: list[SigninFailureListener] = []
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
        self._sessions, self._read_at = {}, {}
        for row in await fetch_all(self.db, _SESSION_QUERY):
            self._remember(_session(row))

    # -- users ------------------------------------------------------------------------

    async def add_user(
        self,
        email: str,
        password: str,
        org_id: int = DEFAULT_ORG_ID,
        role: Role = Role.ADMIN,
    ) -> StaffUser:
        """A new account in `org_id`. Its organisation is fixed: a person who works for
        two organisations has two accounts."""
        email = normalize_email(email)
        fields.password(password)
        encoded = await asyncio.to_thread(hash_password, password)
        now = time.time()
        if await self.user(email) is not None:
            raise InvalidInput(f"{email} already has an account", code="exists", status=409)
        row = await self.db.fetch_one(
            "INSERT INTO staff_users (email, password_hash, created_at, password_changed_at,"
            " org_id, role) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (email, encoded, now, now, org_id, role.value),
        )
        await self.db.commit()
        assert row is not None
        return StaffUser(int(row["id"]), email, now, org_id, role)

    async def remove_user(self, user_id: int, scope: OrgScope) -> StaffUser:
        """Remove an account of an organisation `scope` sees; its sessions end at once."""
        user = await self.user_by_id(user_id, scope)
        if user is None:
            raise NotFound("no such staff account")
        await self.db.execute("DELETE FROM staff_users WHERE id = ?", (user.id,))
        await self.db.commit()
        await self._revoke(Revocation(user_id=user.id))
        return user

    async def user_by_id(self, user_id: int, scope: OrgScope) -> StaffUser | None:
        owned, args = scope.where("org_id")
        row = await fetch_one(
            self.db,
            f"SELECT {_USER_COLUMNS} FROM staff_users WHERE id = ? AND {owned}",
            (user_id, *args),
        )
        return _user(row) if row else None

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
        await self._revoke(Revocation(user_id=user.id))

    async def user(self, email: str) -> StaffUser | None:
        """The account of an email, whichever its organisation (emails are unique)."""
        row = await fetch_one(
            self.db, f"SELECT {_USER_COLUMNS} FROM staff_users WHERE email = ?", (email,)
        )
        return _user(row) if row else None

    async def users(self, scope: OrgScope) -> list[StaffUser]:
        owned, args = scope.where("org_id")
        rows = await fetch_all(
            self.db,
            f"SELECT {_USER_COLUMNS} FROM staff_users WHERE {owned} ORDER BY email",
            args,
        )
        return [_user(r) for r in rows]

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
            self.signin_failures.check(hash_token(email))
        if not isinstance(password, str) or not password or len(password) > fields.PASSWORD_MAX:
            password = ""
        row = await fetch_one(
            self.db,
            "SELECT id, password_hash, org_id, role FROM staff_users WHERE email = ?",
            (email,),
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
                await self._failed(SigninFailure(hash_token(email)))
            raise AuthError("that email and password do not match an account")
        await self._failed(SigninFailure(hash_token(email), cleared=True))
        token = new_token(32)
        now = time.time()
        session = StaffSession(
            token_hash=hash_token(token),
            user_id=int(row[0]),
            email=email,
            csrf=csrf_token(token),
            created_at=now,
            expires_at=now + self.settings.staff_session_hours * 3600,
            org_id=int(row[2]),
            role=Role(row[3]),
        )
        await self.db.execute(
            "INSERT INTO staff_sessions (token_hash, user_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (session.token_hash, session.user_id, now, session.expires_at),
        )
        await self.db.commit()
        self._remember(session)
        return session, token

    async def sign_out(self, session: StaffSession) -> None:
        await self.db.execute(
            "DELETE FROM staff_sessions WHERE token_hash = ?", (session.token_hash,)
        )
        await self.db.commit()
        await self._revoke(Revocation(token_hash=session.token_hash))

    async def session_for(self, token: str | None) -> StaffSession | None:
        """The live session a cookie's token opens, if any: from memory, else (signed in
        on another node, or due for a re-read in a cluster) from the database."""
        if not token or len(token) > 128:
            return None
        token_hash = hash_token(token)
        found = self._sessions.get(token_hash)
        read_at = self._read_at.get(token_hash, 0.0)
        if found is None or (self._shared and time.monotonic() - read_at > SESSION_RECHECK_S):
            found = await self._read_session(token_hash)
        if found is None:
            return None
        if found.expires_at <= time.time():
            self.forget(Revocation(token_hash=token_hash))
            return None
        return dataclasses.replace(found, csrf=csrf_token(token))

    async def _read_session(self, token_hash: str) -> StaffSession | None:
        row = await fetch_one(self.db, f"{_SESSION_QUERY} WHERE s.token_hash = ?", (token_hash,))
        if row is None:
            self.forget(Revocation(token_hash=token_hash))
            return None
        session = _session(row)
        self._remember(session)
        return session

    def _remember(self, session: StaffSession) -> None:
        self._sessions[session.token_hash] = session
        self._read_at[session.token_hash] = time.monotonic()

    def forget(self, revocation: Revocation) -> None:
        """Drop the sessions `revocation` ended from memory (it came from this node or,
        through the fan-out, from another)."""
        for token_hash, session in list(self._sessions.items()):
            if revocation.ends(session):
                del self._sessions[token_hash]
                self._read_at.pop(token_hash, None)

    def on_revoked(self, listener: RevocationListener) -> None:
        """Call `listener` after each session or account's sessions end here."""
        self._revoked_listeners.append(listener)

    def on_signin_failure(self, listener: SigninFailureListener) -> None:
        """Call `listener` after each wrong (or right) password given here."""
        self._failure_listeners.append(listener)

    def count_failure(self, failure: SigninFailure) -> None:
        """Count a wrong password (or forget them after a right one), given here or, through
        the fan-out, on another node."""
        if failure.cleared:
            self.signin_failures.clear(failure.account)
        else:
            self.signin_failures.fail(failure.account)

    async def _failed(self, failure: SigninFailure) -> None:
        self.count_failure(failure)
        for listener in self._failure_listeners:
            await listener(failure)

    async def _revoke(self, revocation: Revocation) -> None:
        self.forget(revocation)
        for listener in self._revoked_listeners:
            await listener(revocation)

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
