"""A real coturn TURN server on loopback, started by a test and stopped by it.

Debian's `coturn` package (`/usr/bin/turnserver`; tests/run.sh installs it). Each server
gets its own config, pid, log and user database in `workdir`, so it never reads
/etc/turnserver.conf nor meets the system daemon. It listens on 127.0.0.1 only, relays
from 127.0.0.1, allows loopback peers (the storyroom server under test is one), and has
no TLS, DTLS, CLI or web admin.

Credentials: `secret` turns on the TURN REST API (time-limited usernames minted by
storyroom.media.turn); `users` adds long-term static users. Short `*_lifetime_s` values make
allocation, permission and channel-binding refreshes happen within a test's minutes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioice.turn
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

TURNSERVER = os.environ.get("STORYROOM_TURNSERVER", "/usr/bin/turnserver")
REALM = "storyroom.test"
START_TIMEOUT_S = 15.0

_MAGIC_COOKIE = 0x2112A442
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101


@dataclass
class Coturn:
    """One running turnserver. Owner: the test that called `start_coturn`."""

    url: str  # "turn:127.0.0.1:<port>?transport=udp"
    port: int
    secret: str | None
    users: dict[str, str]
    realm: str
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def stop(self) -> None:
        """Idempotent: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def allocations(self) -> int | None:
        """Allocations alive now, from the log: sessions opened minus sessions ended
        (deleted by the client, expired or closed). None if the log has no allocation
        lines although coturn logged a successful ALLOCATE (its wording changed)."""
        text = self.log()
        opened = set(re.findall(r"session (\d+): new, realm=", text))
        ended = set(re.findall(r"session (\d+): refreshed, realm=.*, lifetime=0\b", text))
        ended |= set(re.findall(r"session (\d+): closed \(2nd stage\)", text))
        if not opened and "ALLOCATE processed, success" in text:
            return None
        return len(opened - ended)

    def __enter__(self) -> Coturn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_coturn(
    workdir: Path,
    *,
    secret: str | None = "test-secret",
    users: dict[str, str] | None = None,
    port: int | None = None,
    allocate_lifetime_s: int | None = None,
    channel_lifetime_s: int | None = None,
    permission_lifetime_s: int | None = None,
) -> Coturn:
    """Start turnserver on 127.0.0.1 and return once it answers a STUN binding request.

    Raises RuntimeError with its log if it exits or does not answer in time. Call it
    from the main thread: the server is tied to the calling thread's life (pdeathsig),
    so a crashed test run never leaves it behind.
    """
    if not os.access(TURNSERVER, os.X_OK):
        raise RuntimeError(f"{TURNSERVER} not found: install Debian's coturn package")
    users = dict(users or {})
    if secret is None and not users:
        raise ValueError("coturn needs a secret (REST credentials) or users (long-term)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_udp_tcp_port()
    log_path = workdir / "turnserver.log"
    lines = [
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        f"listening-port={port}",
        f"realm={REALM}",
        "fingerprint",
        "allow-loopback-peers",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-rfc5780",
        "no-multicast-peers",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"log-file={log_path}",
        "simple-log",
        f"userdb={workdir / 'turndb'}",
        "verbose",
    ]
    if secret is not None:
        lines += ["use-auth-secret", f"static-auth-secret={secret}"]
    else:
        lines.append("lt-cred-mech")
    for name, password in users.items():
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or "\n" in password:
            raise ValueError(f"unusable coturn user name {name!r}")
        lines.append(f"user={name}:{password}")
    for option, value in (
        ("max-allocate-lifetime", allocate_lifetime_s),
        ("channel-lifetime", channel_lifetime_s),
        ("permission-lifetime", permission_lifetime_s),
    ):
        if value is not None:
            lines.append(f"{option}={int(value)}")
    config = workdir / "turnserver.conf"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)

    command = [TURNSERVER, "-c", str(config), "--no-stdout-log"]
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    with (workdir / "turnserver.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    server = Coturn(
        url=f"turn:127.0.0.1:{port}?transport=udp",
        port=port,
        secret=secret,
        users=users,
        realm=REALM,
        workdir=workdir,
        log_path=log_path,
        process=process,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers_stun(port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            stderr = (workdir / "turnserver.stderr").read_text(errors="replace")
            raise RuntimeError(
                f"coturn did not start on 127.0.0.1:{port} (exit {process.returncode}):\n"
                f"{stderr}\n{server.log()[-4000:]}"
            )
    return server


def _answers_stun(port: int) -> bool:
    """A STUN Binding request over UDP gets a success response (the server is up)."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", _BINDING_REQUEST, 0, _MAGIC_COOKIE) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            response = sock.recv(2048)
        except OSError:  # timeout, or ICMP port unreachable before it binds
            return False
    if len(response) < 20:
        return False
    kind, _, cookie = struct.unpack("!HHI", response[:8])
    return kind == _BINDING_SUCCESS and cookie == _MAGIC_COOKIE and response[8:20] == transaction


def _free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def ice_configuration(snapshot: dict[str, Any]) -> RTCConfiguration:
    """What a seat's snapshot tells its RTCPeerConnection: its ICE servers (its own TURN
    credentials) and the transport policy, as aiortc takes them."""
    servers = [
        RTCIceServer(
            urls=server["urls"],
            username=server.get("username"),
            credential=server.get("credential"),
        )
        for server in snapshot["ice_servers"]
    ]
    policy = (
        RTCIceTransportPolicy.RELAY
        if snapshot["ice_transport_policy"] == "relay"
        else RTCIceTransportPolicy.ALL
    )
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def selected_candidate_types(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """(local, remote) candidate types of the pair ICE nominated, e.g. ("relay", "host").

    aiortc has no candidate-pair stats, so this reads aioice's nominated pair: a test
    helper only, and it fails loudly (AttributeError) if those internals move."""
    transport = pc.getTransceivers()[0].sender.transport.transport
    pair = transport._connection._nominated.get(1)
    if pair is None:
        return None
    return (pair.local_candidate.type, pair.remote_candidate.type)


@contextlib.contextmanager
def aioice_channel_refresh(seconds: int) -> Iterator[None]:
    """Make aiortc peers created meanwhile re-bind their TURN channels every `seconds`.

    aioice refreshes a channel binding (which also refreshes its permission in coturn)
    500 s after binding it, on the next packet sent: right for the RFC's fixed 600 s
    channel lifetime, but a coturn started with a 60 s channel or permission lifetime
    drops the relay after a minute. aiortc does not expose the interval, so this passes
    it to aioice's own `create_turn_endpoint` parameter.
    """
    original = aioice.turn.create_turn_endpoint
    aioice.turn.create_turn_endpoint = functools.partial(  # type: ignore[assignment]
        original, channel_refresh_time=seconds
    )
    try:
        yield
    finally:
        aioice.turn.create_turn_endpoint = original  # type: ignore[assignment]
