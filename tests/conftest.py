from __future__ import annotations

import ctypes
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storyroom.media.aiortc_internals import restrict_host_addresses
from storyroom.netns import in_loopback_only_namespace, isolate_network
from support.server import RunningServer, start_server

# Tests target loopback only. A private network namespace with nothing but `lo`
# guarantees it even for Chromium, which gathers every interface as an ICE candidate;
# ICE host candidates are 127.0.0.1 for aiortc peers in this process and its servers.
if not isolate_network():
    raise pytest.UsageError(
        "the tests need their own network namespace (run as root, or under `unshare -rn`)"
    )
restrict_host_addresses(["127.0.0.1"])

# A private mount namespace too, with `/` made rprivate: tests that mount (a small tmpfs
# to fill a disk) cannot leak mounts to the host, and none outlive the test process.
# Like the network namespace, it must be made while the process has one thread.
CLONE_NEWNS = 0x00020000
PRIVATE_MOUNTS = (
    ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS) == 0
    and subprocess.run(["mount", "--make-rprivate", "/"], check=False).returncode == 0
)


def pytest_report_header() -> str:
    return (
        f"network namespace: loopback only = {in_loopback_only_namespace()}; "
        f"private mount namespace = {PRIVATE_MOUNTS}"
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(tmp_path / "data")
    try:
        yield running
    finally:
        await running.close()
