"""HAProxy (Debian's, which tests/run.sh installs) in front of storyroom nodes, run with
the shipped deploy/haproxy.cfg on loopback ports: started by a test and stopped by pid."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from support.server import free_port

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if found is None:
        raise RuntimeError("HAProxy is not installed (tests/run.sh installs it from apt)")
    return found


def environment(bind: str, nodes: Mapping[str, str]) -> dict[str, str]:
    """The variables deploy/haproxy.cfg reads: where it listens, where node-1 and node-2 are."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/bin",
        "STORYROOM_PROXY_BIND": bind,
        "STORYROOM_NODE_1": nodes["node-1"],
        "STORYROOM_NODE_2": nodes["node-2"],
    }


def check(env: Mapping[str, str], config: Path = CONFIG) -> subprocess.CompletedProcess[str]:
    """`haproxy -c -f config`: HAProxy's own verdict on the file."""
    return subprocess.run(
        [haproxy_binary(), "-c", "-f", str(config)],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Proxy:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def routes(self, timeout: float = 30.0) -> None:
        """Wait until a request through the proxy reaches a node."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process.poll() is None, f"haproxy exited:\n{self.log()[-3000:]}"
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"haproxy does not route:\n{self.log()[-3000:]}"
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        """Idempotent: SIGTERM by pid (SIGKILL if it lingers), reaped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(timeout=10)


@contextmanager
def haproxy(nodes: Mapping[str, str], log_path: Path, port: int | None = None) -> Iterator[Proxy]:
    """deploy/haproxy.cfg listening on 127.0.0.1 and `port` (else a free one), in front
    of `nodes` (node id: host:port), in the foreground (`-db`), until the block ends."""
    port = port or free_port()
    env = environment(f"127.0.0.1:{port}", nodes)
    checked = check(env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(CONFIG)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proxy = Proxy(port, process, log_path)
    try:
        yield proxy
    finally:
        proxy.stop()
