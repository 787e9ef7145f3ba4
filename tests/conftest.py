from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers import RunningServer, start_server
from storyroom.aiortc_internals import restrict_host_addresses
from storyroom.netns import in_loopback_only_namespace, isolate_network

# Tests target loopback only. A private network namespace with nothing but `lo`
# guarantees it even for Chromium, which gathers every interface as an ICE candidate;
# ICE host candidates are 127.0.0.1 for aiortc peers in this process and its servers.
if not isolate_network():
    raise pytest.UsageError(
        "the tests need their own network namespace (run as root, or under `unshare -rn`)"
    )
restrict_host_addresses(["127.0.0.1"])


def pytest_report_header() -> str:
    return f"network namespace: loopback only = {in_loopback_only_namespace()}"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(tmp_path / "data")
    try:
        yield running
    finally:
        await running.close()
