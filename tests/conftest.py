from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers import RunningServer, start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(tmp_path / "data")
    try:
        yield running
    finally:
        await running.close()
