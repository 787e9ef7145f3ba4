"""Shared storage settings and the shipper against a real S3 server (SeaweedFS on
loopback): bad settings are named at start; a store that goes away makes readiness fail
and is caught up with once it is back, and the objects then give back every file
byte for byte."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.config import Settings, SettingsError
from storyroom.storage.keys import RawRange, raw_key
from storyroom.storage.objects import open_s3
from storyroom.storage.recordings import RecordingStorage
from storyroom.storage.shipper import shipped_files
from support.media import start_recording, stop_recording, tone_room
from support.polling import wait_for
from support.process import storyroom
from support.seaweedfs import ACCESS_KEY, SECRET_KEY, restart, seaweed_s3
from support.server import free_port, serving

S3 = {"STORYROOM_S3_BUCKET": "storyroom", "STORYROOM_S3_ENDPOINT": "http://127.0.0.1:8333"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STORYROOM_S3_ENDPOINT": "http://127.0.0.1:8333"}, "s3_bucket is empty"),
        ({"STORYROOM_S3_ACCESS_KEY": "k", "STORYROOM_S3_SECRET_KEY": "s"}, "s3_bucket is empty"),
        ({"STORYROOM_S3_PREFIX": "p/"}, "s3_bucket is empty"),
        ({**S3, "STORYROOM_S3_BUCKET": "Upper_Case"}, "is not a bucket name"),
        ({**S3, "STORYROOM_S3_BUCKET": "ab"}, "is not a bucket name"),
        ({**S3, "STORYROOM_S3_BUCKET": "a..b"}, "is not a bucket name"),
        ({**S3, "STORYROOM_S3_ENDPOINT": "127.0.0.1:8333"}, "is not an http:// or https:// URL"),
        ({**S3, "STORYROOM_S3_ENDPOINT": "ftp://s3.example.org"}, "is not an http://"),
        ({**S3, "STORYROOM_S3_ENDPOINT": "http://"}, "is not an http://"),
        ({**S3, "STORYROOM_S3_ENDPOINT": "http://h:99999"}, "has a bad port"),
        ({**S3, "STORYROOM_S3_ENDPOINT": "http://h:8333/storyroom"}, "without a path"),
        ({**S3, "STORYROOM_S3_ENDPOINT": "http://k:s@h:8333"}, "must not hold credentials"),
        ({**S3, "STORYROOM_S3_ACCESS_KEY": "k"}, "go together"),
        ({**S3, "STORYROOM_S3_SECRET_KEY": "s"}, "go together"),
        ({**S3, "STORYROOM_S3_PREFIX": "a b/"}, "s3_prefix"),
        ({**S3, "STORYROOM_S3_PREFIX": "a/../b/"}, "s3_prefix"),
        ({**S3, "STORYROOM_S3_SHIP_INTERVAL_S": "5"}, "s3_ship_interval_s"),
        ({**S3, "STORYROOM_S3_SHIP_INTERVAL_S": "0"}, "s3_ship_interval_s"),
        ({**S3, "STORYROOM_S3_SHIP_INTERVAL_S": "often"}, "STORYROOM_S3_SHIP_INTERVAL_S"),
        ({**S3, "STORYROOM_S3_URL_TTL_S": "1"}, "s3_url_ttl_s"),
        ({**S3, "STORYROOM_S3_URL_TTL_S": "1.5"}, "STORYROOM_S3_URL_TTL_S"),
        ({**S3, "STORYROOM_S3_MAX_LAG_S": "1"}, "s3_max_lag_s"),
    ],
)
def test_bad_shared_storage_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ=env)


def test_shared_storage_is_off_unless_a_bucket_is_named() -> None:
    assert not Settings.load(environ={}).shared_storage
    on = Settings.load(environ={**S3, "STORYROOM_S3_PREFIX": "storyroom/"})
    assert on.shared_storage and on.s3_prefix == "storyroom/" and on.s3_ship_interval_s == 2.0
    # the pages' players may follow a presigned download there, and nowhere else
    assert on.download_origins == ("http://127.0.0.1:8333",)
    assert Settings.load(environ={"STORYROOM_S3_BUCKET": "bucket"}).download_origins == (
        "https://*.amazonaws.com",
    )
    assert Settings.load(environ={}).download_origins == ()


def _serve(data: Path, env: dict[str, str]) -> Any:
    port = str(free_port())
    return storyroom(
        "serve", "--host", "127.0.0.1", "--port", port, "--data-dir", str(data), env=env
    )


def test_an_endpoint_that_does_not_answer_stops_the_start(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    env = {
        "STORYROOM_S3_ENDPOINT": nobody,
        "STORYROOM_S3_BUCKET": "storyroom",
        "STORYROOM_S3_ACCESS_KEY": ACCESS_KEY,
        "STORYROOM_S3_SECRET_KEY": SECRET_KEY,
    }
    result = _serve(tmp_path / "data", env)
    assert result.returncode == 2, result.stderr
    said = result.stderr.strip().splitlines()[-1]
    assert said.startswith("storyroom: shared storage: bucket 'storyroom' at " + nobody), said
    assert "serving on" not in result.stdout


async def test_a_missing_bucket_or_wrong_key_stops_the_start(tmp_path: Path) -> None:
    async with seaweed_s3(tmp_path / "s3") as s3:
        missing = await asyncio.to_thread(
            _serve, tmp_path / "data", s3.settings(bucket="no-such-bucket")
        )
        wrong_key = await asyncio.to_thread(
            _serve, tmp_path / "data", {**s3.settings(), "STORYROOM_S3_SECRET_KEY": "wrong"}
        )
    for result in (missing, wrong_key):
        assert result.returncode == 2, result.stderr
        assert "storyroom: shared storage: bucket" in result.stderr
    assert "'no-such-bucket'" in missing.stderr and "404" in missing.stderr
    assert "403" in wrong_key.stderr


async def test_check_says_the_bucket_takes_writes_and_refuses_overwrites(tmp_path: Path) -> None:
    async with seaweed_s3(tmp_path / "s3") as s3:
        result = await asyncio.to_thread(
            storyroom, "check", "--data-dir", str(tmp_path / "data"), env=s3.settings()
        )
        lines = [line for line in result.stdout.splitlines() if "shared_storage" in line]
        assert lines and lines[0].startswith("ok "), result.stdout + result.stderr
        assert "refuses overwrites" in lines[0]
        wrong = await asyncio.to_thread(
            storyroom,
            "check",
            "--data-dir",
            str(tmp_path / "data"),
            env={**s3.settings(), "STORYROOM_S3_SECRET_KEY": "wrong"},
        )
    assert wrong.returncode == 1
    failed = [line for line in wrong.stdout.splitlines() if "shared_storage" in line]
    assert failed and failed[0].startswith("FAIL") and "403" in failed[0], wrong.stdout


async def _readiness(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as resp:
        return resp.status, next(
            c for c in (await resp.json())["checks"] if c["name"] == "shipping"
        )


@pytest.mark.slow
async def test_shipping_survives_an_outage_and_gives_every_file_back(tmp_path: Path) -> None:
    async with seaweed_s3(tmp_path / "s3") as s3:
        settings = {k.removeprefix("STORYROOM_").lower(): v for k, v in s3.settings().items()}
        async with serving(tmp_path / "data", **settings, s3_max_lag_s="4") as server:
            shipper = server.services.shipper
            assert shipper is not None and server.services.shared is not None
            async with aiohttp.ClientSession() as http, http.get(f"{server.url}/") as resp:
                csp = resp.headers["Content-Security-Policy"]
            assert f"media-src 'self' blob: {s3.endpoint};" in csp, csp
            async with tone_room(server.url) as (clients, peers):
                await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), 30)
                rec_dir = await start_recording(server.settings.recordings_dir, clients)
                await wait_for(lambda: shipper.objects_shipped >= 7, what="a first pass")
                assert (await _readiness(server.url))[0] == 200

                s3.stop()  # the store goes away while the take goes on
                await wait_for(lambda: shipper.failures > 0, timeout=10, what="a failure")

                async def not_ready() -> dict[str, Any] | None:
                    status, check = await _readiness(server.url)
                    return check if status == 503 and not check["ok"] else None

                check = await wait_for(not_ready, timeout=20, interval=0.2, what="503")
                assert "behind the recorder" in check["detail"], check
                shipped_before = shipper.bytes_shipped

                await restart(s3)
                # caught up once it is back: backoff is at most a few passes here

                async def caught_up() -> bool:
                    return (await _readiness(server.url))[0] == 200

                await wait_for(caught_up, timeout=60, interval=0.2, what="caught up")
                assert shipper.bytes_shipped > shipped_before
                await stop_recording(clients, rec_dir)
            await wait_for(lambda: not shipper.recordings, timeout=20, what="the last pass")

            rebuilt = tmp_path / "rebuilt"
            # what a rebuild cut short left behind is started again, not trusted
            (rebuilt / ".rebuilding" / "stems").mkdir(parents=True)
            (rebuilt / ".rebuilding" / "stems" / "a-01.opus").write_bytes(b"torn")
            files = await server.services.shared.rebuild(rec_dir.name, rebuilt)
            assert not (rebuilt / ".rebuilding").exists()
            sizes = shipped_files(rec_dir)
            assert {f.name: f.bytes for f in files} == sizes
            assert all(f.holes == 0 for f in files)
            for name in sizes:
                assert (rebuilt / name).read_bytes() == (rec_dir / name).read_bytes(), name


TORN = {
    # a node SIGKILLed mid-upload: SeaweedFS keeps an empty object under the range's name
    "the last range torn: the file ends before it": (
        [(0, b"abcd"), (4, b"efgh"), (8, b"")],
        b"abcdefgh",
        0,
    ),
    "a short last range: the file ends before it": (
        [(0, b"abcd"), (4, b"ef")],
        b"abcd",
        0,
    ),
    "a torn range before others: the file stops there, a hole": (
        [(0, b"abcd"), (4, b""), (8, b"ijkl")],
        b"abcd",
        1,
    ),
}


@pytest.mark.parametrize("case", TORN, ids=list(TORN))
async def test_a_torn_upload_is_left_out_of_the_rebuild(tmp_path: Path, case: str) -> None:
    """What the cluster proof (tests/server/test_cluster.py) found: a node killed while
    it uploaded a range left an object shorter than its name says, and the rebuild then
    refused the whole take."""
    ranges, expected, holes = TORN[case]
    recording_id = "rec_0123456789abcdef"
    async with seaweed_s3(tmp_path / "s3") as s3:
        async with open_s3(Settings.load(environ=s3.settings())) as objects:
            shared = RecordingStorage(objects)
            for first, data in ranges:
                end = first + 4  # what the node meant to upload
                key = raw_key("", recording_id, RawRange("stems/a-01.opus", first, end))
                assert await objects.put_new(key, data)
            files = await shared.rebuild(recording_id, tmp_path / "rebuilt")
    assert [(f.name, f.bytes, f.holes) for f in files] == [
        ("stems/a-01.opus", len(expected), holes)
    ]
    assert (tmp_path / "rebuilt" / "stems" / "a-01.opus").read_bytes() == expected
