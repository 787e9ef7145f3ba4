from __future__ import annotations

import ctypes
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Playwright, async_playwright, expect

from storyroom.media.aiortc_internals import restrict_host_addresses
from storyroom.netns import in_loopback_only_namespace, isolate_network
from support.archive import Finished, archive_server, finished_recording
from support.browser import EXPECT_MS, launch, write_tone
from support.media import TONES
from support.postgres import Postgres, running_postgres
from support.server import DATABASES, RunningServer, serving
from support.staff import StaffBrowser, signed_in

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


# What a page shows after a server round trip or WebRTC may take a while on a busy
# machine: every `expect` waits as long as the ones that said so (Playwright: 5 s).
expect.set_options(timeout=EXPECT_MS)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the engine of every server the tests start (postgresql: the run's own cluster)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--database") != "postgresql":
        # a cluster needs PostgreSQL: its tests run once, in the PostgreSQL pass
        skip = pytest.mark.skip(reason="a cluster test (pytest --database=postgresql)")
        marker = "cluster"
    else:
        skip = pytest.mark.skip(reason="about the embedded SQLite file itself")
        marker = "embedded_database"
    for item in items:
        if marker in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"network namespace: loopback only = {in_loopback_only_namespace()}; "
        f"private mount namespace = {PRIVATE_MOUNTS}; "
        f"database = {config.getoption('--database')}"
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server on an empty data directory."""
    async with serving(tmp_path / "data") as running:
        yield running


# -- the two database engines --------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The run's private PostgreSQL cluster (started on first use, stopped by pid)."""
    with running_postgres() as cluster:
        yield cluster


@pytest.fixture(scope="session", autouse=True)
def server_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """In the PostgreSQL pass, every server a test starts keeps its store there."""
    engine = str(request.config.getoption("--database"))
    if engine == "postgresql":
        cluster: Postgres = request.getfixturevalue("postgres")
        DATABASES.new_database = cluster.new_database
    try:
        yield engine
    finally:
        DATABASES.new_database = None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "storyroom.sqlite3")
    cluster: Postgres = request.getfixturevalue("postgres")
    return cluster.new_database()


# -- the staff archive: one finished recording per run, a private copy per test --------


@pytest.fixture(scope="session")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """The run's one finalized recording (made on first use)."""
    return finished_recording(tmp_path_factory.mktemp("recording"))


@pytest.fixture
def archive_settings() -> dict[str, Any]:
    """Settings of the `archive` server besides the usual ones; a test module overrides
    this fixture to change them."""
    return {}


@pytest.fixture
async def archive(
    finished: Finished, tmp_path: Path, archive_settings: dict[str, Any]
) -> AsyncIterator[RunningServer]:
    """A server on a private copy of `finished`, with a staff account (support.staff)."""
    async with archive_server(finished, tmp_path, **archive_settings) as server:
        yield server


@pytest.fixture
async def staff(archive: RunningServer) -> AsyncIterator[StaffBrowser]:
    """The staff member of `archive`, signed in over HTTP."""
    async with signed_in(archive) as browser:
        yield browser


# -- real Chromium ------------------------------------------------------------------------


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as running:
        yield running


Launch = Callable[[float], Awaitable[Browser]]


@pytest.fixture
async def chromium(playwright: Playwright, tmp_path: Path) -> AsyncIterator[Launch]:
    """Launches a Chromium whose fake microphone plays a tone of the given frequency;
    every one launched is closed after the test."""
    launched: list[Browser] = []

    async def launch_with_tone(frequency: float) -> Browser:
        wav = write_tone(tmp_path / f"tone-{len(launched)}.wav", frequency)
        launched.append(await launch(playwright, wav))
        return launched[-1]

    try:
        yield launch_with_tone
    finally:
        for browser in launched:
            await browser.close()


@pytest.fixture
async def browser(chromium: Launch) -> Browser:
    """One Chromium whose fake microphone plays a steady tone."""
    return await chromium(523.0)


@pytest.fixture
async def seat_browsers(chromium: Launch) -> dict[str, Browser]:
    """One Chromium per seat, each microphone playing that seat's tone (support.media.TONES),
    as three people on three machines."""
    return {seat: await chromium(frequency) for seat, frequency in TONES.items()}
