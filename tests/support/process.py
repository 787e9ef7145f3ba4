"""`storyroom` run as its own process, as an operator runs it: `python -m storyroom serve`
on loopback (stopped by the test, by pid), and the other commands."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from support.server import STAFF_TOKEN, free_port

ENV = {
    "STORYROOM_STAFF_TOKEN": STAFF_TOKEN,
    "STORYROOM_ICE_HOST_ADDRESSES": "127.0.0.1",
}


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without STORYROOM_* settings, plus the tests' own and
    `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYROOM_")}
    return {**env, **ENV, **(extra or {})}


def storyroom(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `storyroom` command to its end; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "storyroom", *args],
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@dataclass
class ServerProcess:
    """A `storyroom serve` process; its standard error goes to `log_path`."""

    data_dir: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, path: str = "/readyz", timeout: float = 30.0) -> float:
        """Wait until `path` answers 200; returns when (time.monotonic())."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process.poll() is None, f"the server exited:\n{self.log()[-3000:]}"
                try:
                    async with http.get(self.url + path) as resp:
                        if resp.status == 200:
                            return time.monotonic()
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"{path} not ready:\n{self.log()[-3000:]}"
                await asyncio.sleep(0.05)

    async def exited(self, timeout: float = 60.0) -> float:
        """Wait for the process to end; returns when (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "the server did not exit"
            await asyncio.sleep(0.02)
        return time.monotonic()

    def signal(self, number: signal.Signals) -> float:
        """Send `number`; returns when (time.monotonic())."""
        self.process.send_signal(number)
        return time.monotonic()

    def stop(self) -> None:
        """Idempotent: SIGKILL if it still runs, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


async def metric(url: str, name: str) -> float:
    """The value of the unlabelled metric `name` in the server's `/metrics` at `url`."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found[1])


def serve(
    data_dir: Path, log_path: Path, port: int | None = None, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """Start `storyroom serve` on 127.0.0.1; stop it with `ServerProcess.stop()`."""
    port = port or free_port()
    with open(log_path, "ab") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storyroom",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    return ServerProcess(data_dir, port, log_path, process)


@dataclass
class WorkerProcess:
    """A `storyroom worker` process; its output goes to `log_path`."""

    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Idempotent: SIGKILL if it still runs, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def work(data_dir: Path, log_path: Path, env: Mapping[str, str]) -> WorkerProcess:
    """Start `storyroom worker` on `data_dir`; stop it with `WorkerProcess.stop()`."""
    with open(log_path, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "storyroom", "worker", "--data-dir", str(data_dir)],
            env=environment(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    return WorkerProcess(log_path, process)
