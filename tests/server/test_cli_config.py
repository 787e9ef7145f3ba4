"""The command line and settings: the README's run command really prints working links."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storyroom.config import Settings, SettingsError
from storyroom.store import MIGRATIONS, Store
from support.polling import wait_for_sync
from support.server import SeatClient, create_session, free_port, serving

LINK = re.compile(r"(http://\S+/(room|console|together)/(ses_[0-9a-f]+)#token=(\S+))")


def run_cli(
    *args: str, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "storyroom", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.embedded_database
async def test_session_create_prints_three_working_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    result = run_cli(
        "session",
        "create",
        "--title",
        "Evening",
        "--language",
        "es",
        "--a-name",
        "Rosa",
        "--a-bio",
        "Enfermera",
        "--b-name",
        "Dale",
        "--facilitator-name",
        "Sam",
        "--public-url",
        f"http://127.0.0.1:{port}",
        data_dir=data,
    )
    assert result.returncode == 0, result.stderr
    links = LINK.findall(result.stdout)
    assert [page for _, page, _, _ in links] == ["room", "room", "console"]
    assert len({token for *_, token in links}) == 3
    async with serving(data, port=port) as srv:
        for _url, _page, session_id, token in links:
            client = SeatClient(srv.url, token)
            await client.connect()
            assert client.last["session"]["id"] == session_id
            assert client.last["session"]["language"] == "es"
            await client.close()


@pytest.mark.embedded_database
async def test_session_create_self_guided_prints_two_working_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    args = ("session", "create", "--title", "Kitchen", "--a-name", "Rosa", "--b-name", "Lupe")
    url = ("--public-url", f"http://127.0.0.1:{port}")
    result = run_cli(*args, "--self-guided", *url, data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "(self-guided)" in result.stdout
    links = LINK.findall(result.stdout)
    assert [page for _, page, _, _ in links] == ["together", "together"]
    async with serving(data, port=port) as srv:
        for (_url, _page, _session, token), seat in zip(links, ("a", "b"), strict=True):
            client = SeatClient(srv.url, token)
            await client.connect()
            assert client.last["you"] == seat
            assert client.last["session"]["kind"] == "self_guided"
            await client.close()
    # a facilitator for a self-guided session, or none for a facilitated one: refused
    both = run_cli(*args, "--self-guided", "--facilitator-name", "Sam", data_dir=data)
    assert both.returncode == 2 and "no facilitator" in both.stderr
    neither = run_cli(*args, data_dir=data)
    assert neither.returncode == 2 and "'facilitator'" in neither.stderr


def test_session_create_rejects_bad_values(tmp_path: Path) -> None:
    result = run_cli(
        "session",
        "create",
        "--title",
        "x",
        "--target-minutes",
        "1",
        "--a-name",
        "A",
        "--b-name",
        "B",
        "--facilitator-name",
        "F",
        data_dir=tmp_path,
    )
    assert result.returncode == 2
    assert "target_minutes" in result.stderr


@pytest.mark.slow
def test_serve_demo_prints_links_and_serves(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storyroom",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "STORYROOM_STAFF_TOKEN"},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("serving on" in line for line in lines):
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert len(LINK.findall(text)) == 3, text
        assert f"generated a staff token, saved in {tmp_path / 'staff-token'}" in text
        assert (tmp_path / "staff-token").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "staff-token").read_text().strip() not in text  # never shown
        import urllib.request

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for_sync(up, timeout=60, what="the demo server to answer /healthz")
        room_url = LINK.findall(text)[0][0].split("#")[0]
        with urllib.request.urlopen(room_url, timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()
    # a clean SIGTERM shutdown
    assert proc.returncode == 0 or proc.returncode == -15


TURN = {"STORYROOM_TURN_URLS": "turn:turn.example.org:3478"}
TURN_SECRET = {"STORYROOM_TURN_SECRET": "a-long-shared-secret"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STORYROOM_PORT": "eighty"}, "STORYROOM_PORT"),
        ({"STORYROOM_PORT": "70000"}, "port"),
        ({"STORYROOM_TOKEN_TTL_DAYS": "0"}, "token_ttl_days"),
        ({"STORYROOM_TOKEN_GRACE_HOURS": "0"}, "token_grace_hours"),
        ({"STORYROOM_TOKEN_GRACE_HOURS": "721"}, "token_grace_hours"),
        ({"STORYROOM_TOKEN_GRACE_HOURS": "soon"}, "STORYROOM_TOKEN_GRACE_HOURS"),
        ({"STORYROOM_WARNING_MINUTES": "5,-1"}, "warning_minutes"),
        ({"STORYROOM_SELF_GUIDED_LIMIT_MINUTES": "0"}, "self_guided_limit_minutes"),
        ({"STORYROOM_SELF_GUIDED_LIMIT_MINUTES": "601"}, "self_guided_limit_minutes"),
        ({"STORYROOM_SELF_GUIDED_LIMIT_MINUTES": "hour"}, "STORYROOM_SELF_GUIDED_LIMIT_MINUTES"),
        ({"STORYROOM_ICE_SERVERS": '[{"url": "stun:x"}]'}, "STORYROOM_ICE_SERVERS"),
        ({"STORYROOM_ICE_SERVERS": "http://not-ice"}, "ICE server URL"),
        ({"STORYROOM_PUBLIC_URL": "ftp://x"}, "public_url"),
        ({"STORYROOM_OPUS_MAX_AVERAGE_BITRATE": "1000"}, "opus_max_average_bitrate"),
        ({"STORYROOM_TURN_URLS": "http://turn.example.org", **TURN_SECRET}, "is not a TURN URL"),
        ({"STORYROOM_TURN_URLS": "stun:turn.example.org", **TURN_SECRET}, "is not a TURN URL"),
        (
            {"STORYROOM_TURN_URLS": "turns:turn.example.org?transport=udp", **TURN_SECRET},
            "is not a TURN URL",
        ),
        ({"STORYROOM_TURN_URLS": "turn:turn.example.org:3478"}, "turn_urls needs credentials"),
        (TURN_SECRET, "turn_urls is empty"),
        ({"STORYROOM_TURN_USERNAME": "u", "STORYROOM_TURN_PASSWORD": "p"}, "turn_urls is empty"),
        ({**TURN, **TURN_SECRET, "STORYROOM_TURN_USERNAME": "u"}, "not both"),
        ({**TURN, "STORYROOM_TURN_USERNAME": "u"}, "go together"),
        ({**TURN, "STORYROOM_TURN_PASSWORD": "p"}, "go together"),
        ({**TURN, **TURN_SECRET, "STORYROOM_TURN_TTL_S": "600"}, "turn_ttl_s"),
        ({**TURN, **TURN_SECRET, "STORYROOM_TURN_TTL_S": "1e9"}, "STORYROOM_TURN_TTL_S"),
        ({"STORYROOM_ICE_TRANSPORT_POLICY": "none"}, "ice_transport_policy must be"),
        ({"STORYROOM_ICE_TRANSPORT_POLICY": "relay"}, "relay needs a TURN server"),
        (
            {"STORYROOM_ICE_TRANSPORT_POLICY": "relay", "STORYROOM_ICE_SERVERS": "stun:x:3478"},
            "relay needs a TURN server",
        ),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ=env)


def test_settings_from_env_and_flags() -> None:
    s = Settings.load(
        environ={
            "STORYROOM_PORT": "9000",
            "STORYROOM_WARNING_MINUTES": "1,5,10",
            "STORYROOM_ICE_SERVERS": '[{"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"}]',
        },
        port=9100,
    )
    assert s.port == 9100  # flags win
    assert s.warning_minutes == (10.0, 5.0, 1.0)
    assert s.ice_servers[0].to_json() == {
        "urls": ["turn:127.0.0.1:3478"],
        "username": "u",
        "credential": "p",
    }
    assert s.base_url == "http://127.0.0.1:9100"


def test_turn_settings_from_env() -> None:
    s = Settings.load(
        environ={
            "STORYROOM_TURN_URLS": "turn:turn.example.org:3478?transport=udp, "
            "turns:turn.example.org:5349?transport=tcp,turn:[::1]:3478",
            "STORYROOM_TURN_SECRET": "a-long-shared-secret",
            "STORYROOM_TURN_TTL_S": "7200",
            "STORYROOM_ICE_TRANSPORT_POLICY": "relay",
        }
    )
    assert s.turn_urls == (
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349?transport=tcp",
        "turn:[::1]:3478",
    )
    assert (s.turn_secret, s.turn_ttl_s, s.ice_transport_policy) == (
        "a-long-shared-secret",
        7200,
        "relay",
    )
    # relay-only with a TURN server given the old way, in ice_servers, is fine too
    t = Settings.load(
        environ={
            "STORYROOM_ICE_SERVERS": '[{"urls": "turn:t:3478", "username": "u", "credential": "p"}]',
            "STORYROOM_ICE_TRANSPORT_POLICY": "relay",
        }
    )
    assert t.ice_transport_policy == "relay" and t.turn_urls == ()
    assert Settings.load(environ={}).ice_transport_policy == "all"


def test_bad_setting_exits_with_message(tmp_path: Path) -> None:
    result = run_cli("serve", data_dir=tmp_path, env={"STORYROOM_PORT": "nope"})
    assert result.returncode == 2
    assert "STORYROOM_PORT" in result.stderr


async def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()
    # opening again does not re-run migrations
    store = await Store.open(tmp_path / "db.sqlite3")
    await store.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await Store.open(tmp_path / "db.sqlite3")


@pytest.mark.embedded_database
async def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    async with serving(tmp_path / "data") as srv:
        created = await create_session(srv.url)
    raw = (tmp_path / "data" / "storyroom.sqlite3").read_bytes()
    wal = tmp_path / "data" / "storyroom.sqlite3-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    for seat in created["seats"].values():
        assert seat["token"].encode() not in raw
        assert len(seat["token"]) >= 22  # >= 128 bits, url-safe base64
