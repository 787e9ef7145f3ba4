"""The production topology without containers, on loopback: Debian's Caddy terminates
HTTPS (`tls internal`) in front of `storyroom serve` running in its own process, which
believes Caddy's forwarded headers, binds its audio in a UDP port range and announces a
second loopback address through a 1:1 NAT; coturn checks the TURN credentials storyroom
mints from their shared secret. Three real Chromium seats join through https://, talk,
and record a take; a staff client from another loopback address shows that the server
sees the real client behind Caddy.

Every daemon binds 127.0.0.1 (the NAT 127.0.0.2) and is stopped by its pid."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.async_api import Browser, Playwright, async_playwright, expect

from storyroom.__main__ import demo_session
from support.browser import (
    CHROMIUM,
    LAPTOP,
    PHONE,
    TONES,
    Seat,
    assert_hears,
    chromium_args,
    seat_page,
    turn_on_microphone,
    with_raw_audio,
    write_tone,
)
from support.coturn import Coturn, start_coturn
from support.media import decode_ogg, dominant_frequency
from support.nat import OneToOneNat
from support.polling import wait_for
from support.server import STAFF_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CADDY = os.environ.get("STORYROOM_CADDY", "/usr/bin/caddy")
PUBLIC = "127.0.0.2"  # the announced address: the NAT's side of the 1:1 mapping
ICE_PORTS = range(22000, 22024)
STAFF_CLIENT = "127.0.0.3"  # a staff member's own address, as Caddy sees it
FORGED = "127.0.0.9"  # what that client claims in its own X-Forwarded-For
TURN_SECRET = "topology-turn-secret"
# Generous for a machine with both cores busy: each is the longest wait of one step.
START_S = 90.0
EXPECT_MS = 60_000
TALK_S = 8
CANDIDATE = re.compile(r"a=candidate:\S+ \d+ (\w+) \d+ (\S+) (\d+) typ (\w+)")


@dataclass
class Daemon:
    """A process the test started; stopped by its pid, its output in `log`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def check_alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited ({self.process.returncode}):\n{self.output()}"
            )
        return True


def start_daemon(name: str, command: list[str], env: dict[str, str], workdir: Path) -> Daemon:
    """Start `command` with its output in `workdir/<name>.log`, tied to this thread's
    life (pdeathsig) so that a crashed test run leaves nothing behind."""
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Daemon(name, process, log)


@dataclass
class Topology:
    url: str  # https://127.0.0.1:<Caddy's port>, the public URL
    storyroom_url: str  # http://127.0.0.1:<storyroom's port>, behind Caddy
    storyroom: Daemon
    caddy: Daemon
    coturn: Coturn
    nat: OneToOneNat
    data_dir: Path
    ca: ssl.SSLContext  # trusts Caddy's local CA
    ca_spki: str  # base64 SHA-256 of the CA's root and intermediate keys, for Chromium

    def http(self, local: str = "127.0.0.1") -> aiohttp.ClientSession:
        """A client that checks Caddy's certificate, connecting from `local`."""
        connector = aiohttp.TCPConnector(ssl=self.ca, local_addr=(local, 0))
        # unsafe: keep cookies for an IP address host (the sign-in CSRF cookie)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


def free_ports(count: int) -> list[int]:
    """`count` different free TCP ports on 127.0.0.1 (each held until all are chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def clean_environment(home: Path) -> dict[str, str]:
    """This process's environment without any STORYROOM_ setting, and with a HOME and
    XDG folders of the test's own (Caddy keeps its CA and certificates there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYROOM_")}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
    )
    return env


def caddyfile(https_port: int, http_port: int, upstream_port: int) -> str:
    """deploy/Caddyfile's site with `tls internal` on loopback, no admin endpoint, no
    redirect listener, and no change to the system's trust store."""
    return f"""{{
	admin off
	auto_https disable_redirects
	skip_install_trust
	http_port {http_port}
	https_port {https_port}
	servers {{
		protocols h1 h2
	}}
}}

https://127.0.0.1:{https_port} {{
	bind 127.0.0.1
	tls internal
	reverse_proxy 127.0.0.1:{upstream_port}
}}
"""


def spki_sha256(*certificates: Path) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value for these certificates.
    (It matches the chain the server presents: Caddy sends its intermediate, not the root.)"""
    hashes = []
    for path in certificates:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        hashes.append(base64.b64encode(hashlib.sha256(spki).digest()).decode())
    return ",".join(hashes)


async def answers(url: str, ctx: ssl.SSLContext | bool, daemon: Daemon) -> bool:
    daemon.check_alive()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/healthz", ssl=ctx, timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError):
        return False


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    if not os.access(CADDY, os.X_OK):
        pytest.fail(f"{CADDY} not found: install Debian's caddy package (tests/run.sh does)")
    home = tmp_path / "home"
    home.mkdir()
    env = clean_environment(home)
    https_port, http_port, port = free_ports(3)
    url = f"https://127.0.0.1:{https_port}"
    data_dir = tmp_path / "data"
    async with contextlib.AsyncExitStack() as stack:
        nat = OneToOneNat(PUBLIC, "127.0.0.1", ICE_PORTS)
        stack.push_async_callback(nat.close)
        await nat.start()
        coturn = start_coturn(tmp_path / "coturn", secret=TURN_SECRET)
        stack.callback(coturn.stop)

        settings = {
            "STORYROOM_PUBLIC_URL": url,
            "STORYROOM_TRUSTED_PROXIES": "127.0.0.1",
            "STORYROOM_ICE_PORT_RANGE": f"{ICE_PORTS[0]}-{ICE_PORTS[-1]}",
            "STORYROOM_ICE_HOST_ADDRESSES": "127.0.0.1",
            "STORYROOM_ICE_PUBLIC_ADDRESS": PUBLIC,
            "STORYROOM_TURN_URLS": coturn.url,
            "STORYROOM_TURN_SECRET": TURN_SECRET,
            "STORYROOM_STAFF_TOKEN": STAFF_TOKEN,
        }
        serve = [sys.executable, "-m", "storyroom", "serve", "--host", "127.0.0.1"]
        serve += ["--port", str(port), "--data-dir", str(data_dir)]
        storyroom = start_daemon("storyroom", serve, env | settings, tmp_path)
        stack.callback(storyroom.stop)
        storyroom_url = f"http://127.0.0.1:{port}"
        await wait_for(
            lambda: answers(storyroom_url, False, storyroom),
            timeout=START_S,
            interval=0.25,
            what="storyroom serve to answer /healthz",
        )

        config = tmp_path / "Caddyfile"
        config.write_text(caddyfile(https_port, http_port, port))
        command = [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"]
        caddy = start_daemon("caddy", command, env, tmp_path)
        stack.callback(caddy.stop)
        authority = home / "data" / "caddy" / "pki" / "authorities" / "local"
        root, intermediate = authority / "root.crt", authority / "intermediate.crt"

        async def root_made() -> bool:
            made = [path.exists() and path.stat().st_size > 0 for path in (root, intermediate)]
            return caddy.check_alive() and all(made)

        await wait_for(root_made, timeout=START_S, interval=0.25, what="Caddy's local CA")
        ca = ssl.create_default_context(cafile=str(root))
        await wait_for(
            lambda: answers(url, ca, caddy),
            timeout=START_S,
            interval=0.25,
            what="Caddy to serve storyroom's /healthz over HTTPS",
        )
        yield Topology(
            url,
            storyroom_url,
            storyroom,
            caddy,
            coturn,
            nat,
            data_dir,
            ca,
            spki_sha256(root, intermediate),
        )


@pytest.fixture
async def pw() -> AsyncIterator[Playwright]:
    async with async_playwright() as playwright:
        yield playwright


async def launch_trusting(pw: Playwright, wav: Path, spki: str) -> Browser:
    """Chromium that accepts certificates chained to Caddy's local CA (by its key)."""
    return await pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*chromium_args(wav), f"--ignore-certificate-errors-spki-list={spki}"],
    )


async def test_behind_caddy_the_server_sees_the_client_and_https(topology: Topology) -> None:
    # A staff client on its own address signs in wrongly through Caddy, claiming to
    # be someone else in its own X-Forwarded-For: Caddy replaces the header, storyroom
    # believes Caddy, and the audit log names the client's real address.
    async with topology.http(local=STAFF_CLIENT) as http:
        async with http.get(f"{topology.url}/api/staff/csrf") as resp:
            assert resp.status == 200
            csrf = (await resp.json())["csrf"]
            cookie = resp.cookies["storyroom_csrf"]
            # set over Caddy's HTTPS: Secure; HSTS only because X-Forwarded-Proto was believed
            assert cookie["secure"], cookie.OutputString()
            assert resp.headers.get("Strict-Transport-Security") == "max-age=31536000"
        async with http.post(
            f"{topology.url}/api/staff/signin",
            json={"email": "nobody@example.org", "password": "not the password"},
            headers={"X-CSRF-Token": csrf, "X-Forwarded-For": FORGED},
        ) as resp:
            assert resp.status == 401, await resp.text()
    async with (
        topology.http() as http,
        http.get(
            f"{topology.url}/api/audit",
            params={"action": "sign_in_failed"},
            headers={"Authorization": f"Bearer {STAFF_TOKEN}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        entries = (await resp.json())["entries"]
    assert [(e["actor"], e["address"]) for e in entries] == [("nobody@example.org", STAFF_CLIENT)]

    # Straight to storyroom over plain HTTP (not through Caddy): no HSTS.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{topology.storyroom_url}/api/staff/csrf") as resp,
    ):
        assert resp.status == 200
        assert "Strict-Transport-Security" not in resp.headers


def udp_ports(pid: int) -> set[int]:
    """The local ports of the UDP sockets process `pid` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def server_answer(seat: Seat) -> str:
    """The SDP answer storyroom sent this seat (its current peer connection's)."""
    sdp: str = await seat.page.evaluate("() => window.storyroom.client.pc.remoteDescription.sdp")
    return sdp


async def test_three_seats_record_through_caddy_and_the_nat(
    topology: Topology, pw: Playwright, tmp_path: Path
) -> None:
    async with (
        topology.http() as http,
        http.post(
            f"{topology.url}/api/sessions",
            json=demo_session(),
            headers={"Authorization": f"Bearer {STAFF_TOKEN}"},
        ) as resp,
    ):
        created = await resp.json()
        assert resp.status == 201, created
    links = {seat: with_raw_audio(created["seats"][seat]["url"]) for seat in TONES}
    for link in links.values():
        assert link.startswith(f"{topology.url}/"), link

    async with contextlib.AsyncExitStack() as stack:
        browsers = {}
        for seat, freq in TONES.items():
            browser = await launch_trusting(
                pw, write_tone(tmp_path / f"{seat}.wav", freq), topology.ca_spki
            )
            stack.push_async_callback(browser.close)
            browsers[seat] = browser
        a = await stack.enter_async_context(seat_page(browsers["a"], links["a"], "a", PHONE))
        b = await stack.enter_async_context(seat_page(browsers["b"], links["b"], "b", PHONE))
        f = await stack.enter_async_context(
            seat_page(browsers["facilitator"], links["facilitator"], "facilitator", LAPTOP)
        )
        await record_a_take(topology, created["id"], a, b, f)


async def record_a_take(topology: Topology, session_id: str, a: Seat, b: Seat, f: Seat) -> None:
    everyone = [a, b, f]
    for person in everyone:
        # https:// through Caddy is a secure context: the microphone may be asked for
        assert await person.page.evaluate("() => window.isSecureContext") is True
        await turn_on_microphone(person.page)
    for person in everyone:
        await expect(person.page.locator("#audio-status")).to_have_attribute(
            "data-state", "connected", timeout=EXPECT_MS
        )

    # The server's candidates: the announced address, ports of the range, nothing else.
    for person in everyone:
        candidates = CANDIDATE.findall(await server_answer(person))
        assert candidates, f"{person.name}: no candidate in the server's answer"
        for transport, address, port, _kind in candidates:
            assert transport.lower() == "udp", (person.name, transport)
            assert (address, int(port) in ICE_PORTS) == (PUBLIC, True), (person.name, address, port)
    held = udp_ports(topology.storyroom.process.pid)
    assert held and held <= set(ICE_PORTS), sorted(held)
    # The seats' checks reached the server through the announced address, and its
    # answers came back through it.
    assert topology.nat.inbound > 0 and topology.nat.outbound > 0

    for seat in (a, b):
        await seat.page.get_by_label("Record this conversation").check()
        await seat.page.get_by_role("button", name="Save my choices").click()
        await expect(seat.page.locator("#consent-status")).to_contain_text(
            "Saved. Recording: yes.", timeout=EXPECT_MS
        )
    await f.page.get_by_role("button", name="Start recording").click()
    for person in everyone:
        await expect(person.page.locator("#rec-indicator")).to_have_attribute(
            "data-state", "recording", timeout=EXPECT_MS
        )

    await assert_hears(f.page, ["a", "b"])
    await assert_hears(a.page, ["b", "facilitator"])
    await assert_hears(b.page, ["a", "facilitator"])

    elapsed = f.page.locator("#timer-elapsed")

    async def talked() -> bool:
        text = await elapsed.text_content() or "0:00"
        minutes, _, seconds = text.partition(":")
        return int(minutes) * 60 + int(seconds or 0) >= TALK_S

    await wait_for(talked, timeout=TALK_S + 60, interval=0.5, what=f"{TALK_S} s of talk")
    await f.page.get_by_role("button", name="Stop recording").click()
    await f.page.get_by_role("dialog").get_by_role("button", name="Yes, stop recording").click()
    for person in everyone:
        await expect(person.page.locator("#rec-indicator")).to_have_attribute(
            "data-state", "stopped", timeout=EXPECT_MS
        )
    for person in everyone:
        person.watch.assert_clean()

    # Each seat's stem, written by the server process, holds that seat's own tone.
    recordings = list((topology.data_dir / "recordings").iterdir())
    assert len(recordings) == 1, recordings
    for seat, freq in TONES.items():
        stems = sorted((recordings[0] / "stems").glob(f"{seat}-*.opus"), key=stem_size)
        assert stems, f"no stem for {seat}"
        audio = decode_ogg(str(stems[-1]))
        assert len(audio) >= 48_000 * (TALK_S - 2), f"{seat}: {len(audio) / 48_000:.1f} s"
        middle = audio[len(audio) // 2 : len(audio) // 2 + 24_000]
        assert dominant_frequency(middle) == pytest.approx(freq, abs=5)

    # coturn accepted the credentials storyroom minted for these seats from the shared
    # secret (Chromium allocates a relay while gathering, even when it goes direct).
    allocated = re.findall(
        rf"user <\d+:{session_id}\.(\w+)>: incoming packet ALLOCATE processed, success",
        topology.coturn.log(),
    )
    assert set(allocated) == set(TONES), (allocated, topology.coturn.log()[-3000:])


def stem_size(path: Path) -> int:
    return path.stat().st_size
