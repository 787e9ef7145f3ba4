"""Settings: one frozen, typed object built at start-up from flags and STORYROOM_* variables."""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Variables with the prefix that are not settings: the test runner's and the image's.
NOT_SETTINGS = frozenset({"STORYROOM_CHROMIUM"})

# UDP ports a room's audio holds on each host address: three seats, each of which may
# briefly have a second peer connection while it replaces the first.
PORTS_PER_ROOM = 6


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. Field docs are the README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("media")
    # Base of the join links; defaults to http://host:port.
    public_url: str = ""
    # Staff bearer token; when empty one is generated on first start into data_dir.
    staff_token: str = ""
    token_ttl_days: float = 14.0
    # A scheduled session's seat links work until this long after its start.
    token_grace_hours: float = 48.0
    max_request_bytes: int = 64 * 1024
    warning_minutes: tuple[float, ...] = (5.0, 1.0)
    # A self-guided conversation's recording stops by itself after this many recorded
    # minutes (pauses excluded). One setting for the whole server until partner
    # organisations can set their own.
    self_guided_limit_minutes: float = 60.0
    # The published invitation page (/invite): a person invites someone they know to a
    # self-guided conversation, confirming their email first; requests per client
    # address an hour. Off unless turned on (one setting until organisations have theirs).
    self_guided_invites: bool = False
    invite_rate_limit: int = 5
    reconnect_grace_s: float = 10.0
    # At stop, finalization waits up to this long while a browser is still uploading
    # its capture of the take (storyroom.capture); 0: never waits.
    capture_wait_s: float = 120.0
    ice_servers: tuple[IceServer, ...] = field(default_factory=tuple)
    # Addresses the server offers as ICE host candidates; empty: every interface.
    ice_host_addresses: tuple[str, ...] = field(default_factory=tuple)
    # TURN relay (docs/turn.md): turn:/turns: URLs, with either a coturn
    # static-auth-secret (the server mints time-limited credentials per seat, valid
    # turn_ttl_s) or a long-term username/password that every seat shares.
    turn_urls: tuple[str, ...] = field(default_factory=tuple)
    turn_secret: str = ""
    turn_ttl_s: int = 12 * 3600
    turn_username: str = ""
    turn_password: str = ""
    # "all", or "relay": browsers then use TURN relay candidates only.
    ice_transport_policy: str = "all"
    # Serve HTTPS (and wss:) directly with this certificate chain and key (PEM files).
    tls_cert: str = ""
    tls_key: str = ""
    # Reverse proxies whose Forwarded / X-Forwarded-* headers are believed (addresses or
    # CIDRs); empty: the headers are ignored and the peer address is the client.
    trusted_proxies: tuple[Network, ...] = field(default_factory=tuple)
    # UDP ports for the server's ICE candidates, "first-last"; empty: any free port.
    ice_port_range: tuple[int, int] | None = None
    # Rooms with live audio at once; 0: no limit. With ice_port_range, the range must
    # hold PORTS_PER_ROOM ports per room and host address.
    max_rooms: int = 0
    # The address offered in the server's ICE candidates instead of the interface's
    # (1:1 NAT: a cloud VM's public address, a container host's).
    ice_public_address: str = ""
    opus_max_average_bitrate: int = 96_000
    log_level: str = "INFO"
    # "text" for people, "json" (one object a line, with request ids) for log pipelines.
    log_format: str = "text"
    # /metrics (Prometheus text) answers without staff credentials from these networks.
    metrics_networks: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # /readyz fails when the data folder has less free space than this (MiB).
    min_free_mb: int = 1024
    # On SIGTERM, live takes are stopped and the server waits at most this long for
    # them to be closed and their finalization to be queued.
    shutdown_grace_s: float = 10.0
    # Browser pages; defaults to the checkout's static/ (the image sets /app/static).
    static_dir: Path = Path(__file__).resolve().parent.parent / "static"
    # PostgreSQL (postgresql://user:password@host:port/database) for a cluster; empty:
    # the embedded SQLite file in data_dir.
    database_url: str = ""
    # Finalization jobs: `inprocess` (a queue inside this process, the embedded default)
    # or `postgres` (a job row in PostgreSQL, written in the transaction that stops the
    # take, run by `storyroom worker` processes; needs database_url).
    queue: str = "inprocess"
    # With the postgres queue: whether `storyroom serve` runs a worker too (one node).
    queue_worker: bool = True
    # A worker's heartbeat; the job of a worker silent for queue_stalled_s is retried.
    queue_heartbeat_s: float = 10.0
    queue_stalled_s: float = 30.0
    # Mail: SMTP when smtp_host is set, else .eml files in data_dir/outbox.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"  # starttls | ssl | none
    smtp_user: str = ""
    smtp_password: str = ""
    mail_from: str = "storyroom <storyroom@localhost>"
    # Matching: 0 pairs opposite sides of the centre; 1-6 a placement gap of at least this.
    matching_min_distance: int = 0
    # Application form submissions allowed per client address per hour.
    apply_rate_limit: int = 20
    # Staff sign-in: session cookie lifetime; attempts per client address (and failures
    # per account) per 15 minutes.
    staff_session_hours: float = 12.0
    signin_rate_limit: int = 10
    # Wrong tokens (staff bearer, copy links, seat links) per client address per
    # 10 minutes before that address is refused for a while.
    bad_token_limit: int = 20
    # Participants' links to their copies expire after this many days.
    copy_link_days: float = 30.0
    # BagIt exports: bag-info.txt fields.
    bag_source_organization: str = "storyroom"
    bag_organization_address: str = ""
    bag_contact_name: str = ""
    bag_contact_email: str = ""
    bag_contact_phone: str = ""
    # Shared storage (docs/deploy.md): with a bucket, recordings are shipped to this
    # S3-compatible store while recorded, finalized files are uploaded and downloads are
    # presigned. Empty bucket: local files only. The endpoint must be reachable by the
    # browsers that download (presigned URLs point at it); empty: AWS S3 itself.
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    # Empty keys: botocore's own chain (AWS_* variables, instance roles).
    s3_access_key: str = ""
    s3_secret_key: str = ""
    # Prepended to every object key, e.g. "storyroom/"; letters, digits and -_./ only.
    s3_prefix: str = ""
    # Seconds between shipping passes (what a crash can lose, beyond the local disk).
    s3_ship_interval_s: float = 2.0
    # Lifetime of a presigned download URL.
    s3_url_ttl_s: int = 300
    # /readyz fails when shipping is this many seconds behind the recorder.
    s3_max_lag_s: float = 15.0
    # Redis (redis://[user:password@]host:port/db, rediss:// for TLS) for what is live and
    # disposable across nodes: the staff pages' room updates and staff sign-outs
    # (docs/deploy.md#redis). Empty: one process, no Redis.
    redis_url: str = ""
    # A cluster (database_url set; docs/deploy.md): this process's node id, which is
    # also its server name in HAProxy (a client's `node` pin routes there); empty: one
    # generated at the first start and kept in data_dir/node_id. Letters, digits and
    # -_. only, at most 64.
    node_id: str = ""
    # Seconds between the node's heartbeats in the database; a node whose last heartbeat
    # is older than node_dead_after_s is declared dead by the reaper (every node runs
    # one, every node_reap_interval_s): its takes become interrupted, its rooms free.
    node_heartbeat_s: float = 2.0
    node_dead_after_s: float = 15.0
    node_reap_interval_s: float = 5.0

    @property
    def shared_storage(self) -> bool:
        """Whether recordings go to an S3 bucket (else local files only)."""
        return bool(self.s3_bucket)

    @property
    def download_origins(self) -> tuple[str, ...]:
        """Where presigned downloads point (the pages' players follow them there)."""
        if not self.shared_storage:
            return ()
        if not self.s3_endpoint:
            return ("https://*.amazonaws.com",)
        parts = urllib.parse.urlsplit(self.s3_endpoint)
        return (f"{parts.scheme}://{parts.netloc}",)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def database_path(self) -> Path:
        """The embedded database's file (used when `database_url` is empty)."""
        return self.data_dir / "storyroom.sqlite3"

    @property
    def database(self) -> Path | str:
        """Where the store lives: PostgreSQL's URL when one is set, else the SQLite file."""
        return self.database_url or self.database_path

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from STORYROOM_* variables, then flags (overrides that are not None)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "STORYROOM_" + f.name.upper()
            if name in env:
                values[f.name] = _parse(f.name, env[name], name)
        _warn_unknown(env)
        for key, value in overrides.items():
            if value is not None:
                values[key] = _parse(key, value, "--" + key.replace("_", "-"))
        return _validated(replace(cls(), **values))


def setting_variables() -> list[str]:
    return ["STORYROOM_" + f.name.upper() for f in fields(Settings)]


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """`STORYROOM_*` variables that name no setting, each with a likely meaning."""
    known = setting_variables()
    said = []
    for name in sorted(env):
        if name.startswith("STORYROOM_") and name not in known and name not in NOT_SETTINGS:
            close = difflib.get_close_matches(
                name.removeprefix("STORYROOM_"), [k.removeprefix("STORYROOM_") for k in known], n=1
            )
            hint = f" (did you mean STORYROOM_{close[0]}?)" if close else ""
            said.append(f"{name} is not a setting{hint}")
    return said


def _warn_unknown(env: Mapping[str, str]) -> None:
    for line in unknown_variables(env):
        logging.getLogger(__name__).warning("%s; it is ignored", line)


def _networks(raw: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(a.strip(), strict=False) for a in raw.split(",") if a.strip())


def _port_range(raw: str) -> tuple[int, int] | None:
    raw = raw.strip()
    if not raw:
        return None
    first, sep, last = raw.partition("-")
    if not sep:
        raise ValueError("expected first-last, e.g. 40000-40199")
    return int(first), int(last)


def _parse(name: str, raw: Any, source: str) -> Any:
    if not isinstance(raw, str):
        return Path(raw) if name in ("data_dir", "static_dir") else raw
    try:
        if name in ("trusted_proxies", "metrics_networks"):
            return _networks(raw)
        if name == "ice_port_range":
            return _port_range(raw)
        if name == "ice_public_address":
            return str(ipaddress.ip_address(raw.strip())) if raw.strip() else ""
        if name in ("log_level", "log_format"):
            return raw.strip().upper() if name == "log_level" else raw.strip().lower()
        if name in (
            "port",
            "min_free_mb",
            "max_rooms",
            "max_request_bytes",
            "opus_max_average_bitrate",
            "smtp_port",
            "matching_min_distance",
            "apply_rate_limit",
            "invite_rate_limit",
            "signin_rate_limit",
            "bad_token_limit",
            "turn_ttl_s",
            "s3_url_ttl_s",
        ):
            return int(raw)
        if name in (
            "token_ttl_days",
            "token_grace_hours",
            "self_guided_limit_minutes",
            "reconnect_grace_s",
            "capture_wait_s",
            "staff_session_hours",
            "copy_link_days",
            "shutdown_grace_s",
            "s3_ship_interval_s",
            "s3_max_lag_s",
            "node_heartbeat_s",
            "node_dead_after_s",
            "node_reap_interval_s",
            "queue_heartbeat_s",
            "queue_stalled_s",
        ):
            return float(raw)
        if name in ("data_dir", "static_dir"):
            return Path(raw)
        if name in ("self_guided_invites", "queue_worker"):
            return _switch(raw)
        if name == "warning_minutes":
            return tuple(float(x) for x in raw.split(",") if x.strip())
        if name == "ice_servers":
            return _parse_ice_servers(raw)
        if name == "turn_urls":
            return tuple(u.strip() for u in raw.split(",") if u.strip())
        if name == "ice_host_addresses":
            return tuple(str(ipaddress.ip_address(a.strip())) for a in raw.split(",") if a.strip())
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{source}: cannot read {raw!r}: {exc}") from None
    return raw


def _switch(raw: str) -> bool:
    """`on`/`off` (also true/false, yes/no, 1/0), any case."""
    value = raw.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0", ""):
        return False
    raise ValueError("expected on or off")


def _parse_ice_servers(raw: str) -> tuple[IceServer, ...]:
    """Either a JSON list of RTCIceServer objects or a comma-separated list of URLs."""
    raw = raw.strip()
    if not raw:
        return ()
    if not raw.startswith("["):
        return (IceServer(urls=tuple(u.strip() for u in raw.split(",") if u.strip())),)
    items = json.loads(raw)
    if not isinstance(items, list):
        raise ValueError("expected a JSON list")
    servers = []
    for item in items:
        if not isinstance(item, dict) or "urls" not in item:
            raise ValueError("each ICE server needs 'urls'")
        urls = item["urls"]
        urls = (urls,) if isinstance(urls, str) else tuple(str(u) for u in urls)
        servers.append(
            IceServer(urls=urls, username=item.get("username"), credential=item.get("credential"))
        )
    return tuple(servers)


def _validated(s: Settings) -> Settings:
    if not 0 <= s.port <= 65535:
        raise SettingsError(f"port {s.port} is not between 0 and 65535")
    if not 0 < s.token_ttl_days <= 365:
        raise SettingsError("token_ttl_days must be more than 0 and at most 365")
    if not 0 < s.token_grace_hours <= 24 * 30:
        raise SettingsError("token_grace_hours must be more than 0 and at most 720 (30 days)")
    if not 1024 <= s.max_request_bytes <= 16 * 1024 * 1024:
        raise SettingsError("max_request_bytes must be between 1 KiB and 16 MiB")
    if any(m <= 0 or m > 600 for m in s.warning_minutes):
        raise SettingsError("warning_minutes must be positive minutes, e.g. 5,1")
    if not 0 < s.self_guided_limit_minutes <= 600:
        raise SettingsError("self_guided_limit_minutes must be more than 0 and at most 600")
    if not 0 <= s.reconnect_grace_s <= 300:
        raise SettingsError("reconnect_grace_s must be between 0 and 300")
    if not 0 <= s.capture_wait_s <= 3600:
        raise SettingsError("capture_wait_s must be between 0 and 3600")
    if not 6000 <= s.opus_max_average_bitrate <= 510_000:
        raise SettingsError("opus_max_average_bitrate must be between 6000 and 510000")
    if s.public_url and not s.public_url.startswith(("http://", "https://")):
        raise SettingsError("public_url must start with http:// or https://")
    if not 1 <= s.smtp_port <= 65535:
        raise SettingsError("smtp_port must be between 1 and 65535")
    if s.smtp_security not in ("starttls", "ssl", "none"):
        raise SettingsError("smtp_security must be starttls, ssl or none")
    if not 0 <= s.matching_min_distance <= 6:
        raise SettingsError("matching_min_distance must be between 0 and 6")
    if not 1 <= s.invite_rate_limit <= 10_000:
        raise SettingsError("invite_rate_limit must be between 1 and 10000")
    if not 1 <= s.apply_rate_limit <= 100_000:
        raise SettingsError("apply_rate_limit must be between 1 and 100000")
    if not 0 < s.staff_session_hours <= 24 * 30:
        raise SettingsError("staff_session_hours must be more than 0 and at most 720")
    if not 1 <= s.signin_rate_limit <= 10_000:
        raise SettingsError("signin_rate_limit must be between 1 and 10000")
    if not 1 <= s.bad_token_limit <= 100_000:
        raise SettingsError("bad_token_limit must be between 1 and 100000")
    if not 0 < s.copy_link_days <= 3650:
        raise SettingsError("copy_link_days must be more than 0 and at most 3650")
    for server in s.ice_servers:
        for url in server.urls:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise SettingsError(
                    f"ICE server URL {url!r} must start with stun:, turn: or turns:"
                )
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(
            "database_url must be a PostgreSQL URL (postgresql://user@host:port/database),"
            " or empty for the embedded SQLite file"
        )
    _validate_queue(s)
    _validate_turn(s)
    _validate_operations(s)
    _validate_storage(s)
    _validate_redis(s.redis_url)
    _validate_cluster(s)
    return replace(s, warning_minutes=tuple(sorted(s.warning_minutes, reverse=True)))


# turn:host[:port][?transport=udp|tcp] and turns:host[:port][?transport=tcp], as
# browsers and aiortc read them (RFC 7065).
TURN_URL = re.compile(
    r"(turn:[^?:/\s]+|turn:\[[0-9a-fA-F:]+\])(:\d{1,5})?(\?transport=(udp|tcp))?"
    r"|(turns:[^?:/\s]+|turns:\[[0-9a-fA-F:]+\])(:\d{1,5})?(\?transport=tcp)?"
)


QUEUES = ("inprocess", "postgres")


def _validate_queue(s: Settings) -> None:
    if s.queue not in QUEUES:
        raise SettingsError(f"queue must be one of {', '.join(QUEUES)}, not {s.queue!r}")
    if s.queue == "postgres" and not s.database_url:
        raise SettingsError("queue postgres needs database_url (a PostgreSQL URL)")
    if not 0.1 <= s.queue_heartbeat_s <= 600:
        raise SettingsError("queue_heartbeat_s must be between 0.1 and 600")
    if not 2 * s.queue_heartbeat_s <= s.queue_stalled_s <= 3600:
        raise SettingsError(
            "queue_stalled_s must be at least twice queue_heartbeat_s, and at most 3600"
        )


def _validate_turn(s: Settings) -> None:
    for url in s.turn_urls:
        if not TURN_URL.fullmatch(url):
            raise SettingsError(
                f"turn_urls: {url!r} is not a TURN URL like turn:turn.example.org:3478"
                "?transport=udp or turns:turn.example.org:5349?transport=tcp"
            )
    long_term = bool(s.turn_username or s.turn_password)
    if s.turn_urls and not (s.turn_secret or long_term):
        raise SettingsError(
            "turn_urls needs credentials: turn_secret (coturn static-auth-secret) "
            "or turn_username and turn_password"
        )
    if (s.turn_secret or long_term) and not s.turn_urls:
        raise SettingsError("TURN credentials are set but turn_urls is empty")
    if s.turn_secret and long_term:
        raise SettingsError("set either turn_secret or turn_username/turn_password, not both")
    if long_term and not (s.turn_username and s.turn_password):
        raise SettingsError("turn_username and turn_password go together")
    if not 3600 <= s.turn_ttl_s <= 7 * 24 * 3600:
        raise SettingsError(
            "turn_ttl_s must be between 3600 and 604800 seconds: credentials must "
            "outlast a whole session, refreshes included"
        )
    if s.ice_transport_policy not in ("all", "relay"):
        raise SettingsError("ice_transport_policy must be all or relay")
    has_turn = bool(s.turn_urls) or any(
        url.startswith(("turn:", "turns:")) for server in s.ice_servers for url in server.urls
    )
    if s.ice_transport_policy == "relay" and not has_turn:
        raise SettingsError("ice_transport_policy relay needs a TURN server (turn_urls)")


def _validate_operations(s: Settings) -> None:
    if s.log_level not in LOG_LEVELS:
        raise SettingsError(f"log_level {s.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if s.log_format not in ("text", "json"):
        raise SettingsError(f"log_format {s.log_format!r} is not text or json")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise SettingsError("tls_cert and tls_key go together")
    for name in ("tls_cert", "tls_key"):
        path = getattr(s, name)
        if path and not Path(path).is_file():
            raise SettingsError(f"{name}: {path} is not a readable file")
    if not 0 <= s.max_rooms <= 100_000:
        raise SettingsError("max_rooms must be between 0 (no limit) and 100000")
    if s.ice_port_range is not None:
        first, last = s.ice_port_range
        if not 1024 <= first <= last <= 65535:
            raise SettingsError(
                f"ice_port_range {first}-{last}: need 1024 <= first <= last <= 65535"
            )
        addresses = max(1, len(s.ice_host_addresses))
        needed = PORTS_PER_ROOM * addresses * max(1, s.max_rooms)
        if last - first + 1 < needed:
            raise SettingsError(
                f"ice_port_range {first}-{last} holds {last - first + 1} ports; "
                f"{max(1, s.max_rooms)} room(s) on {addresses} address(es) need {needed} "
                f"({PORTS_PER_ROOM} per room and address): widen the range or lower max_rooms"
            )
    if not 0 <= s.min_free_mb <= 10_000_000:
        raise SettingsError("min_free_mb must be between 0 and 10000000")
    if not 0 < s.shutdown_grace_s <= 300:
        raise SettingsError("shutdown_grace_s must be more than 0 and at most 300")


S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
S3_PREFIX = re.compile(r"[A-Za-z0-9_./-]*")


def _validate_storage(s: Settings) -> None:
    s3_set = [
        name
        for name in ("s3_endpoint", "s3_access_key", "s3_secret_key", "s3_prefix")
        if getattr(s, name)
    ]
    if s3_set and not s.s3_bucket:
        raise SettingsError(
            f"{', '.join(s3_set)} set but s3_bucket is empty: name the bucket "
            "(STORYROOM_S3_BUCKET) or unset them to keep recordings on local files only"
        )
    if not s.s3_bucket:
        return
    if not S3_BUCKET.fullmatch(s.s3_bucket) or ".." in s.s3_bucket:
        raise SettingsError(
            f"s3_bucket {s.s3_bucket!r} is not a bucket name (3-63 lower-case letters, "
            "digits, dots and hyphens)"
        )
    if s.s3_endpoint:
        parsed = _server_url(
            f"s3_endpoint {s.s3_endpoint!r}",
            s.s3_endpoint,
            ("http", "https"),
            "an http:// or https:// URL",
            "https://s3.example.org or http://127.0.0.1:8333",
        )
        if parsed.username is not None or parsed.password is not None:
            raise SettingsError(
                "s3_endpoint must not hold credentials: use s3_access_key and s3_secret_key"
            )
        if parsed.path.strip("/") or parsed.query or parsed.fragment:
            raise SettingsError(
                f"s3_endpoint {s.s3_endpoint!r} must be the server alone, without a path "
                "(the bucket is s3_bucket)"
            )
    if bool(s.s3_access_key) != bool(s.s3_secret_key):
        raise SettingsError("s3_access_key and s3_secret_key go together")
    if not S3_PREFIX.fullmatch(s.s3_prefix) or ".." in s.s3_prefix.split("/"):
        raise SettingsError(f"s3_prefix {s.s3_prefix!r}: use letters, digits and -_./ only")
    if not 0.1 <= s.s3_ship_interval_s <= 2.0:
        raise SettingsError(
            "s3_ship_interval_s must be between 0.1 and 2: a crash loses about that much"
        )
    if not 10 <= s.s3_url_ttl_s <= 7 * 24 * 3600:
        raise SettingsError("s3_url_ttl_s must be between 10 and 604800 seconds")
    if not s.s3_ship_interval_s < s.s3_max_lag_s <= 3600:
        raise SettingsError("s3_max_lag_s must be above s3_ship_interval_s and at most 3600")


def _validate_redis(url: str) -> None:
    """A Redis URL the client can open: redis:// or rediss://, a host, a port and a
    database number that are numbers (checked now, not at the first publish)."""
    if not url:
        return
    example = "redis://127.0.0.1:6379/0"
    # named, never shown: the URL may hold Redis's password
    parsed = _server_url(
        "redis_url",
        url,
        ("redis", "rediss"),
        "a redis:// or rediss:// URL",
        f"{example} (rediss:// for TLS), or empty for one process without Redis",
    )
    database = parsed.path.strip("/")
    if database and not database.isdigit():
        raise SettingsError(
            f"redis_url's database must be a number (the /0 in {example}), not {database!r}"
        )
    if parsed.query or parsed.fragment:
        raise SettingsError("redis_url must not carry options (?...) or a fragment")


def _server_url(
    shown: str, url: str, schemes: tuple[str, ...], kind: str, like: str
) -> urllib.parse.SplitResult:
    """`url` split, when it has one of `schemes`, a host and a numeric port; else a
    settings error that names it as `shown` and says it should be `kind`, like `like`."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise SettingsError(f"{shown} is not {kind} like {like}")
    try:
        parsed.port  # noqa: B018 - reading it checks it
    except ValueError:
        raise SettingsError(f"{shown} has a bad port") from None
    return parsed


NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A node id: also an HAProxy server name and a URL query value, so nothing to escape."""


def _validate_cluster(s: Settings) -> None:
    if s.node_id and not NODE_ID.fullmatch(s.node_id):
        raise SettingsError(
            f"node_id {s.node_id!r}: use 1-64 letters, digits and -_. (starting with a letter"
            " or digit), the same name as the node's server line in HAProxy"
        )
    if not 0.1 <= s.node_heartbeat_s <= 60:
        raise SettingsError("node_heartbeat_s must be between 0.1 and 60")
    if not 2 * s.node_heartbeat_s < s.node_dead_after_s <= 3600:
        raise SettingsError(
            "node_dead_after_s must be more than two heartbeats (node_heartbeat_s) and at"
            " most 3600: a node that missed one heartbeat is not dead"
        )
    if not 0.1 <= s.node_reap_interval_s <= 600:
        raise SettingsError("node_reap_interval_s must be between 0.1 and 600")
