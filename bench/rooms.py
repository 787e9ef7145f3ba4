#!/usr/bin/env python
"""Benchmark: N recording rooms of three aiortc seats against a storyroom server process.

    .venv/bin/python bench/rooms.py --rooms 10 --seconds 60

Starts `python -m storyroom serve` on 127.0.0.1 with a fresh data directory, creates
N sessions, and connects 3N seats from client worker processes (`seat_load.py`:
pre-encoded Opus sent in real time, received packets counted, nothing decoded). Every
room records. Over a steady window it measures the server process's own CPU time
(/proc/<pid>/stat), its RSS, and the frames lost on every received track. Then it
does the same against a transcoding relay (`relay_baseline.py`, aiortc MediaRelay:
decode + re-encode per receiver, no recording) and prints both side by side with
the goals of issue 3.

Everything listens on 127.0.0.1; ICE uses no STUN/TURN server. The run stops by
itself (hard timeout), stops its child processes on exit, Ctrl-C or error, and
removes its temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import profile_stacks
import seat_load
from revisions import extract_revision

from storyroom.__main__ import demo_session
from storyroom.media.metrics import histogram_quantile
from storyroom.netns import isolate_network

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1

GOAL_CPU_PCT = 0.8  # % of one core per participant (issue 18; issue 3 asked 1.5)
GOAL_ROOMS = 10
GOAL_LOSS_PCT = 0.5
BASELINE = "relay-baseline"
SATURATED = 0.90  # machine busy fraction from which a figure is not trusted


class BenchError(Exception):
    """The benchmark could not measure (a process died, a step timed out)."""


class HardTimeout(BenchError):
    pass


# -- /proc accounting ------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads (not its children)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already in user/nice
    return total - idle, total


# -- child processes ---------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child if the benchmark dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Children:
    """Every process the benchmark started; `stop_all` ends whatever is still running."""

    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[BaseProcess] = field(default_factory=list)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                worker.terminate()
        for worker in self.workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
        self.workers.clear()
        for server in self.servers:
            stop_server(server, timeout=15)
        self.servers.clear()


def stop_server(server: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, wait, SIGKILL. Returns the exit status (None if it had to be killed)."""
    if server.poll() is not None:
        return server.returncode
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(5)
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# Loopback only: never route these requests through an HTTP proxy from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with _http.open(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"server exited with {server.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError, ValueError):
            status, body = http_json(f"{url}/healthz")
            if status == 200 and body == {"status": "ok"}:
                return
        time.sleep(0.1)
    raise BenchError(f"server not healthy after {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


# -- one measured run against one server ---------------------------------------------------


@dataclass
class Track:
    key: str
    expected: int
    received: int
    gaps: int
    backlog: int
    """Frames that arrived after the window closed: roughly the delay, in 20 ms frames."""

    @property
    def lost(self) -> int:
        return self.expected - self.received


@dataclass
class Phase:
    """The figures of one server under one load."""

    name: str
    rooms: int
    seats: int
    window_s: float
    server_cpu_s: float = 0.0
    rss_idle_mb: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    machine_busy_cores: float = 0.0
    client_cpu_pct: float = 0.0
    client_late_s: float = 0.0
    connect_s: float = 0.0
    connected_end: int = 0
    """Seats whose peer connection was still connected when the window closed."""
    dropped: int = 0
    """Seats whose peer connection or socket went away unasked before the drain ended."""
    tracks: list[Track] = field(default_factory=list)
    stems: int = 0
    stem_bytes: int = 0
    recordings_stopped: int = 0
    server_exit: int | None = None
    latency_ms: tuple[float | None, float | None] = (None, None)
    """p50 and p99 of a forwarded packet's time in the server over the window."""
    threads: int = 0
    """The server's threads when the window opened."""
    profile: list[str] = field(default_factory=list)
    """With --profile: where the CPU went, one line a category."""
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_pct_core(self) -> float:
        return 100 * self.server_cpu_s / self.window_s

    @property
    def cpu_pct_per_participant(self) -> float:
        return self.cpu_pct_core / self.seats

    @property
    def expected(self) -> int:
        return sum(t.expected for t in self.tracks)

    @property
    def loss_pct(self) -> float:
        """Frames lost over all received tracks: sent by the source, never received."""
        return 100 * sum(t.lost for t in self.tracks) / max(1, self.expected)

    @property
    def worst_loss_pct(self) -> float:
        return max((100 * t.lost / max(1, t.expected) for t in self.tracks), default=0.0)

    @property
    def gap_pct(self) -> float:
        return 100 * sum(t.gaps for t in self.tracks) / max(1, self.expected)

    @property
    def backlog_ms(self) -> tuple[float, float]:
        """Mean and largest delay estimate at the window's end: frames in flight times 20 ms."""
        if not self.tracks:
            return 0.0, 0.0
        frames = [t.backlog for t in self.tracks]
        return 20 * sum(frames) / len(frames), 20.0 * max(frames)

    @property
    def live_tracks(self) -> int:
        return sum(1 for t in self.tracks if t.received > 0)

    @property
    def other_cores(self) -> float:
        """Cores busy in the window with neither this server nor the client workers."""
        ours = (self.server_cpu_s / self.window_s) + self.client_cpu_pct / 100
        return max(0.0, self.machine_busy_cores - ours)

    @property
    def carried_load(self) -> bool:
        """Every seat stayed connected and the server kept up with real time; otherwise
        its CPU figure measures a collapsing server and is not compared."""
        return self.dropped == 0 and self.connected_end == self.seats and self.backlog_ms[0] < 500

    @property
    def saturated(self) -> bool:
        return self.machine_busy_cores >= SATURATED * CORES

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("tracks")
        for name in (
            "cpu_pct_core",
            "cpu_pct_per_participant",
            "expected",
            "loss_pct",
            "worst_loss_pct",
            "gap_pct",
            "backlog_ms",
            "live_tracks",
            "other_cores",
            "carried_load",
            "saturated",
        ):
            out[name] = getattr(self, name)
        out["received_tracks"] = len(self.tracks)
        return out


def start_storyroom(
    tmp: Path,
    rooms: int,
    children: Children,
    pythonpath: Path | None = None,
    server_env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str, list[dict[str, str]], Path, str | None]:
    """The server of this checkout, or with `pythonpath` the `storyroom` package there;
    `server_env` adds STORYROOM_* settings."""
    port = free_port()
    data_dir = tmp / "storyroom-data"
    staff_token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYROOM_")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)  # wins over the editable install's finder
    env["STORYROOM_STAFF_TOKEN"] = staff_token
    env["STORYROOM_ICE_HOST_ADDRESSES"] = "127.0.0.1"
    env.update(server_env or {})
    command = [sys.executable, "-m", "storyroom", "serve", "--host", HOST, "--port", str(port)]
    command += ["--data-dir", str(data_dir)]
    server, url, _ = _launch(command, env, tmp / "storyroom.log", port, children)
    tokens = []
    for i in range(rooms):
        status, created = http_json(
            f"{url}/api/sessions", demo_session(title=f"Bench room {i}"), staff_token
        )
        if status != 201:
            raise BenchError(f"POST /api/sessions: {status} {created}")
        tokens.append({seat: created["seats"][seat]["token"] for seat in seat_load.SEATS})
    return server, url, tokens, data_dir, staff_token


def start_baseline(
    tmp: Path, rooms: int, children: Children, pythonpath: Path | None = None
) -> tuple[subprocess.Popen[bytes], str, list[dict[str, str]], Path, str | None]:
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "relay_baseline.py"), "--host", HOST]
    command += ["--port", str(port)]
    server, url, _ = _launch(command, dict(os.environ), tmp / "baseline.log", port, children)
    tokens = [{seat: f"room{i}:{seat}" for seat in seat_load.SEATS} for i in range(rooms)]
    return server, url, tokens, tmp, None


def _launch(
    command: list[str], env: dict[str, str], log: Path, port: int, children: Children
) -> tuple[subprocess.Popen[bytes], str, Path]:
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            cwd=log.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops it
            preexec_fn=_die_with_parent,
        )
    children.servers.append(server)
    url = f"http://{HOST}:{port}"
    wait_healthy(url, server, log, timeout=30)
    return server, url, log


def receive(conns: list[Connection], kind: str, timeout: float) -> list[dict[str, Any]]:
    """One `kind` message from every worker, in `conns` order."""
    messages: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(messages) < len(conns):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"client workers: no {kind!r} after {timeout:.0f}s")
        for ready in wait([c for i, c in enumerate(conns) if i not in messages], remaining):
            assert isinstance(ready, Connection)
            try:
                message = ready.recv()
            except EOFError:
                raise BenchError("a client worker died") from None
            if message[0] == "failed":
                raise BenchError(f"a client worker failed: {message[1]}")
            if message[0] != kind:
                raise BenchError(f"client worker: expected {kind!r}, got {message[0]!r}")
            messages[conns.index(ready)] = message[1]
    return [messages[i] for i in range(len(conns))]


def phase_budget(rooms: int, args: argparse.Namespace) -> float:
    """Seconds one phase may take before the hard timeout."""
    return 150 + 4 * rooms + args.warmup + args.seconds


def run_phase(
    name: str,
    rooms: int,
    args: argparse.Namespace,
    packets: list[bytes],
    tmp: Path,
    children: Children,
    pythonpath: Path | None = None,
    profile: bool = False,
    server_env: Mapping[str, str] | None = None,
    on_window: Callable[[str, float, float], None] | None = None,
) -> Phase:
    """One server under `rooms` rooms: storyroom (this checkout's or `pythonpath`'s,
    with `server_env` added to its settings) unless `name` is the relay baseline's.
    `on_window(url, t0, t1)` hears the server and the measured window (wall clock)."""
    record = name != BASELINE
    phase_dir = tmp / f"{name}-{rooms}"
    phase_dir.mkdir()
    progress(f"{name}: starting the server ({rooms} rooms)")
    if record:
        started = start_storyroom(phase_dir, rooms, children, pythonpath, server_env)
    else:
        started = start_baseline(phase_dir, rooms, children, pythonpath)
    server, url, tokens, data_dir, staff_token = started
    phase = Phase(name, rooms, rooms * 3, float(args.seconds))
    phase.rss_idle_mb = process_rss_mb(server.pid)

    workers = min(args.clients, rooms)
    context = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    processes: list[BaseProcess] = []
    for w in range(workers):
        config = seat_load.WorkerConfig(
            url=url,
            rooms={i: tokens[i] for i in range(w, rooms, workers)},
            packets=packets,
            record=record,
            deadline_s=phase_budget(rooms, args),
        )
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=seat_load.worker_main, args=(child_end, config), name=f"seats-{w}", daemon=True
        )
        process.start()
        child_end.close()
        children.workers.append(process)
        processes.append(process)
        conns.append(parent_end)
    progress(f"{name}: connecting {rooms * 3} seats from {workers} client processes")
    ready = receive(conns, "ready", timeout=60 + 4 * rooms)
    phase.connect_s = max(r["connect_s"] for r in ready)

    t0 = time.time() + args.warmup
    t1 = t0 + args.seconds
    for conn in conns:
        conn.send(("window", t0, t1))
    progress(f"{name}: all seats connected; {args.warmup:.0f}s warm-up, {args.seconds:.0f}s window")
    if on_window is not None:
        on_window(url, t0, t1)
    sleep_until(t0)
    cpu0, busy0, workers0 = sample(server.pid, processes)
    latency0 = forward_latency(url, staff_token)
    phase.rss_start_mb = process_rss_mb(server.pid)
    phase.threads = len(list(Path(f"/proc/{server.pid}/task").iterdir()))
    sampler = None
    if profile:
        sampler = profile_stacks.start_sampler(server.pid, args.seconds, args.profile, name)
    sleep_until(t1)
    cpu1, busy1, workers1 = sample(server.pid, processes)
    latency1 = forward_latency(url, staff_token)
    if latency0 and latency1:
        counts = [b - a for a, b in zip(latency0, latency1, strict=True)]
        phase.latency_ms = (histogram_quantile(counts, 0.5), histogram_quantile(counts, 0.99))
    if sampler is not None and sampler.wait(60) != 0:
        phase.notes.append(f"py-spy exited with {sampler.returncode}: see {args.profile}")
    phase.rss_end_mb = process_rss_mb(server.pid)
    phase.server_cpu_s = cpu1 - cpu0
    phase.machine_busy_cores = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * CORES
    phase.client_cpu_pct = 100 * (sum(workers1) - sum(workers0)) / args.seconds

    windows = receive(conns, "window", timeout=30 + seat_load.DRAIN_S)
    stacks_path = args.profile / f"{name}.txt" if sampler is not None else None
    if stacks_path is not None and stacks_path.exists():
        received = phase.seats * round(args.seconds * 48000 / seat_load.FRAME)
        stacks = profile_stacks.categorise(stacks_path)
        phase.profile = profile_stacks.table(stacks, phase.server_cpu_s, received)
        title = f"{name}: {rooms} rooms, {args.seconds:.0f} s window"
        profile_stacks.flame_graph(stacks_path, stacks_path.with_suffix(".svg"), title)
    phase.client_late_s = max(w["late_s"] for w in windows)
    phase.tracks = tracks_lost(windows)
    phase.connected_end = sum(w["end"]["connected"] for w in windows)
    dropped = [d for w in windows for d in w["drained"]["dropped"].values()]
    phase.dropped = len(dropped)
    if phase.connected_end < phase.seats or dropped:
        first = {
            what: min(d[what] for d in dropped if what in d) - t0
            for what in ("audio", "socket")
            if any(what in d for d in dropped)
        }
        when = ", ".join(f"first {what} drop at {at:+.0f}s" for what, at in first.items())
        phase.notes.append(
            f"{phase.connected_end} of {phase.seats} seats still connected when the window "
            f"closed; {len(dropped)} dropped ({when or 'before the window'}, relative to its start)"
        )
    extra = [t.key for t in phase.tracks if t.lost < 0]
    if extra:
        phase.notes.append(f"tracks received more frames than were sent in the window: {extra}")

    progress(f"{name}: stopping")
    for conn in conns:
        conn.send(("stop",))
    stopped = receive(conns, "stopped", timeout=60)
    for worker in processes:
        worker.join(30)
    phase.recordings_stopped = sum(len(s["recordings"]) for s in stopped)
    for s in stopped:
        phase.notes += s["stop_errors"]
    phase.server_exit = stop_server(server, timeout=30)
    if phase.server_exit != 0:
        phase.notes.append(f"server exit status {phase.server_exit}")
    if record:
        check_recordings(phase, data_dir)
    warn(phase)
    return phase


def warn(phase: Phase) -> None:
    """Notes on why a phase's figures may not mean what they seem to."""
    if phase.cpu_pct_core >= 90:
        phase.notes.append(
            f"the server process used {phase.cpu_pct_core:.0f}% of one core: its event loop "
            "(one Python thread; codec threads share its GIL) is probably saturated, so its "
            "per-participant figure is a lower bound"
        )
    if phase.backlog_ms[0] > 500:
        phase.notes.append(
            f"frames reached the seats {phase.backlog_ms[0]:.0f} ms late on average when the "
            "window closed: the server is falling behind real time"
        )
    if phase.saturated:
        phase.notes.append(
            f"machine saturated: {phase.machine_busy_cores:.2f} of {CORES} cores busy "
            "in the window; the server competed for CPU, its figures are unreliable"
        )
    if phase.other_cores > 0.2:
        phase.notes.append(
            f"other processes kept {phase.other_cores:.2f} cores busy in the window: "
            "the machine is shared, figures are noisy"
        )
    if phase.client_late_s > 0.2:
        phase.notes.append(f"client event loops lagged {phase.client_late_s:.2f}s")


def forward_latency(url: str, staff_token: str | None) -> list[int] | None:
    """The server's histogram of forwarded packets' time in it (storyroom only)."""
    if staff_token is None:
        return None
    _, body = http_json(f"{url}/api/metrics", token=staff_token)
    return list(body["media"]["forward_latency"]["counts"])


def sample(pid: int, workers: list[BaseProcess]) -> tuple[float, tuple[int, int], list[float]]:
    return (
        process_cpu_s(pid),
        machine_ticks(),
        [process_cpu_s(w.pid) for w in workers if w.pid is not None],
    )


def tracks_lost(windows: list[dict[str, Any]]) -> list[Track]:
    """Per received track: frames its source sent in the window vs. frames received
    from just before the window opened until the drain after it closed."""
    sent_start: dict[str, int] = {}
    sent_end: dict[str, int] = {}
    tracks = []
    for window in windows:
        sent_start.update(window["start"]["sent"])
        sent_end.update(window["drained"]["sent"])
    for window in windows:
        for key, (received, gaps) in window["drained"]["received"].items():
            received_start, gaps_start = window["start"]["received"].get(key, (0, 0))
            received_at_end = window["end"]["received"].get(key, (0, 0))[0]
            listener, source_seat = key.split("<-")
            source = f"{listener.split('/')[0]}/{source_seat}"
            tracks.append(
                Track(
                    key,
                    expected=sent_end[source] - sent_start.get(source, 0),
                    received=received - received_start,
                    gaps=gaps - gaps_start,
                    backlog=received - received_at_end,
                )
            )
    return tracks


def check_recordings(phase: Phase, data_dir: Path) -> None:
    """After the server stopped: every room's stems exist and its log says stopped."""
    recordings = sorted((data_dir / "recordings").glob("*/"))
    stems = [p for r in recordings for p in (r / "stems").glob("*.opus")]
    phase.stems = len(stems)
    phase.stem_bytes = sum(p.stat().st_size for p in stems)
    stopped = sum(
        1
        for r in recordings
        if (r / "recording.jsonl").exists() and '"stop"' in (r / "recording.jsonl").read_text()
    )
    if len(recordings) != phase.rooms or stopped != phase.rooms:
        phase.notes.append(f"{len(recordings)} recordings on disk, {stopped} stopped")
    if phase.stems != phase.seats:
        phase.notes.append(f"{phase.stems} stems on disk for {phase.seats} seats")
    empty = [p.name for p in stems if p.stat().st_size < 1000]
    if empty:
        phase.notes.append(f"near-empty stems: {empty}")


def sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- report ------------------------------------------------------------------------------


def report(phases: list[Phase], args: argparse.Namespace, took_s: float) -> str:
    """The table: storyroom, then (if run) the previous code and the relay baseline, and
    storyroom's ratio to each."""
    ours = phases[0]
    others = phases[1:]
    lines = [
        f"rooms={ours.rooms} seats={ours.seats} window={args.seconds:.0f}s "
        f"warmup={args.warmup:.0f}s cores={CORES} client-processes={min(args.clients, ours.rooms)}"
    ]
    for other in others:
        if other.rooms != ours.rooms:
            lines.append(f"({other.name} at rooms={other.rooms} seats={other.seats})")

    header = ("", *(p.name for p in phases), *(f"/ {p.name}" for p in others))
    rows: list[tuple[str, ...]] = [header]

    def add(
        label: str,
        shown: Callable[[Phase], str],
        value: Callable[[Phase], float] | None = None,
        per_participant: bool = False,
    ) -> None:
        """A table row; a ratio only where the two columns are comparable."""
        ratios = []
        for other in others:
            ratio = ""
            comparable = other.rooms == ours.rooms or per_participant
            if value is not None and comparable and value(other):
                if ours.carried_load and other.carried_load:
                    ratio = f"{value(ours) / value(other):.2f}"
                else:
                    ratio = "n/a*"
            ratios.append(ratio)
        rows.append((label, *(shown(p) for p in phases), *ratios))

    add("rooms / seats", lambda p: f"{p.rooms} / {p.seats}")
    add(
        "CPU % core/participant",
        lambda p: f"{p.cpu_pct_per_participant:.2f}",
        lambda p: p.cpu_pct_per_participant,
        per_participant=True,
    )
    add("server CPU % of one core", lambda p: f"{p.cpu_pct_core:.1f}", lambda p: p.cpu_pct_core)
    add("frames lost per track", lambda p: f"{p.loss_pct:.3f}%")
    add("  worst track", lambda p: f"{p.worst_loss_pct:.3f}%")
    add("  RTP seq gaps srv->seat", lambda p: f"{p.gap_pct:.3f}%")
    add(
        "delay at window end ms",
        lambda p: "{:.0f} (max {:.0f})".format(*p.backlog_ms),
    )
    add(
        "forward latency p50/p99 ms",
        lambda p: "/".join("-" if v is None else f"{v:.2f}" for v in p.latency_ms),
    )
    add("seats connected at end", lambda p: f"{p.connected_end}/{p.seats}")
    add("received tracks (live)", lambda p: f"{len(p.tracks)} ({p.live_tracks})")
    add("frames expected", lambda p: str(p.expected))
    add(
        "RSS idle/start/end MB",
        lambda p: f"{p.rss_idle_mb:.0f}/{p.rss_start_mb:.0f}/{p.rss_end_mb:.0f}",
        lambda p: p.rss_end_mb,
    )
    add("server threads", lambda p: str(p.threads))
    add(f"machine busy (of {CORES} cores)", lambda p: f"{p.machine_busy_cores:.2f}")
    add("client procs CPU % core", lambda p: f"{p.client_cpu_pct:.1f}")
    add("other processes (cores)", lambda p: f"{p.other_cores:.2f}")
    add(
        "recording",
        lambda p: f"{p.stems} stems, {p.stem_bytes / 1e6:.1f} MB" if p.name != BASELINE else "none",
    )
    lines += format_rows(rows)
    for phase in phases:
        for note in phase.notes:
            lines.append(f"note ({phase.name}): {note}")
    collapsed = [p.name for p in phases if not p.carried_load]
    if collapsed:
        lines.append(
            f"* {', '.join(collapsed)} did not carry the load (seats dropped or it fell behind "
            "real time): its CPU figure is not a cost per participant, so no ratio; "
            "try fewer rooms (--baseline-rooms)"
        )
    for phase in phases:
        if phase.profile:
            lines += ["", f"profile of {phase.name} ({args.profile}/{phase.name}.svg):"]
            lines += [f"  {line}" for line in phase.profile]

    lines.append("")
    lines.append("goals (issue 18, this machine):")
    cpu_ok = ours.cpu_pct_per_participant <= GOAL_CPU_PCT and ours.carried_load
    lines.append(
        f"  server CPU <= {GOAL_CPU_PCT}% of one core per participant: "
        f"{ours.cpu_pct_per_participant:.2f}%  {'PASS' if cpu_ok else 'FAIL'}"
        + ("" if ours.carried_load else " (it did not carry the load)")
        + ("" if ours.other_cores <= 0.2 else " (the machine was busy: compare the ratios)")
    )
    loss_ok = ours.loss_pct < GOAL_LOSS_PCT and ours.live_tracks == ours.rooms * 6
    recorded = ours.stems == ours.seats and ours.recordings_stopped == ours.rooms
    if ours.rooms >= GOAL_ROOMS:
        verdict = "PASS" if loss_ok and recorded else "FAIL"
    else:
        verdict = f"NOT TESTED (only {ours.rooms} rooms)"
    lines.append(
        f"  {GOAL_ROOMS} concurrent recording rooms, < {GOAL_LOSS_PCT}% frames lost: "
        f"{ours.rooms} rooms recording ({ours.stems}/{ours.seats} stems), "
        f"{ours.loss_pct:.3f}% lost  {verdict}"
    )
    lines.append(f"run took {took_s:.0f}s")
    return "\n".join(lines)


@dataclass(frozen=True)
class NotMeasured:
    """A --scale phase that could not be measured (its seats never all connected, its
    server died): the other phases' figures are still printed."""

    name: str
    rooms: int
    reason: str


def scale_phase(
    name: str,
    rooms: int,
    args: argparse.Namespace,
    packets: list[bytes],
    tmp: Path,
    children: Children,
    pythonpath: Path | None,
) -> Phase | NotMeasured:
    """One --scale point; a failure ends that phase's processes and is reported in the
    table instead of ending the run (a loaded machine may not connect 60 seats)."""
    try:
        return run_phase(name, rooms, args, packets, tmp, children, pythonpath)
    except HardTimeout:
        raise
    except BenchError as exc:
        progress(f"{name}: {rooms} rooms not measured: {exc}")
        children.stop_all()
        return NotMeasured(name, rooms, str(exc))


def scale_report(scale: list[list[Phase | NotMeasured]]) -> str:
    """Server CPU per participant at each room count (--scale), storyroom beside the
    previous code: what does not grow with the seats shows at one room."""
    names = [p.name for p in scale[0]]
    header = ("rooms", *(f"{n} %/participant" for n in names), *(f"{n} % core" for n in names))
    rows: list[tuple[str, ...]] = [header]
    failures: list[str] = []
    for phases in scale:
        rows.append(
            (
                str(phases[0].rooms),
                *(
                    "n/m"
                    if isinstance(p, NotMeasured)
                    else f"{p.cpu_pct_per_participant:.2f}" + ("" if p.carried_load else "*")
                    for p in phases
                ),
                *("n/m" if isinstance(p, NotMeasured) else f"{p.cpu_pct_core:.1f}" for p in phases),
            )
        )
        failures += [
            f"n/m: {p.name} at {p.rooms} rooms not measured: {p.reason}"
            for p in phases
            if isinstance(p, NotMeasured)
        ]
    lines = ["", "server CPU per participant by rooms (* did not carry the load):"]
    return "\n".join(lines + format_rows(rows) + failures)


def format_rows(rows: list[tuple[str, ...]]) -> list[str]:
    """First column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "   ".join(
            f"{cell:<{widths[i]}}" if i == 0 else f"{cell:>{widths[i]}}"
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


# -- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rooms", type=int, default=10, help="rooms of three seats")
    parser.add_argument("--seconds", type=float, default=60, help="length of the measured window")
    parser.add_argument(
        "--warmup", type=float, default=5, help="seconds between connect and window"
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the transcoding relay baseline (aiortc MediaRelay)",
    )
    parser.add_argument(
        "--baseline-rooms",
        type=int,
        default=None,
        help="rooms for the baseline (default: --rooms); fewer if it saturates the machine",
    )
    parser.add_argument("--clients", type=int, default=2, help="client worker processes")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also measure the server of git revision REV (its server/, by git archive)",
    )
    parser.add_argument(
        "--scale",
        metavar="ROOMS",
        type=lambda text: [int(n) for n in text.split(",")],
        help="also measure server CPU per participant at these room counts, e.g. 1,10,20 "
        "(storyroom, and --before's code)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="sample the storyroom servers with py-spy over the window: a flame graph "
        "DIR/<name>.svg, collapsed stacks DIR/<name>.txt, and a table of where the CPU went",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the temporary directory (server logs, storyroom recordings) and print it",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="hard limit on the whole run, seconds"
    )
    return parser


@contextlib.contextmanager
def hard_limits(seconds: float) -> Iterator[None]:
    """SIGALRM after `seconds` and SIGTERM both unwind the run through its cleanup."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise HardTimeout(f"hard timeout: the run took more than {seconds:.0f}s")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGALRM, on_alarm), signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max(1, int(seconds)))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rooms < 1 or args.seconds <= 0 or args.clients < 1:
        print("rooms.py: --rooms, --seconds and --clients must be positive", file=sys.stderr)
        return 2
    if args.warmup < seat_load.PRE_QUIET_S + 1:
        print(
            f"rooms.py: --warmup must be at least {seat_load.PRE_QUIET_S + 1:.0f}s", file=sys.stderr
        )
        return 2
    # Loopback only: a network namespace with nothing but `lo` (the seats' and
    # servers' ICE candidates are 127.0.0.1), so no packet can go anywhere else.
    if not isolate_network():
        print("rooms.py: needs its own network namespace: run as root", file=sys.stderr)
        return 2
    baseline_rooms = args.baseline_rooms or args.rooms
    storyrooms = 2 if args.before else 1
    budget = args.timeout or (
        storyrooms * phase_budget(args.rooms, args)
        + (phase_budget(baseline_rooms, args) if args.baseline else 0)
        + storyrooms * sum(phase_budget(n, args) for n in args.scale or [])
    )
    began = time.monotonic()
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="storyroom-bench-"))
    phases: list[Phase] = []
    scale: list[list[Phase | NotMeasured]] = []
    try:
        with hard_limits(budget):
            packets = seat_load.encode_tone()
            before = extract_revision(args.before, tmp / "before") if args.before else None
            servers: list[tuple[str, Path | None]] = [("storyroom", None)]
            if before is not None:
                servers.append((f"before-{args.before}", before))
            for name, path in servers:
                phases.append(
                    run_phase(
                        name, args.rooms, args, packets, tmp, children, path, bool(args.profile)
                    )
                )
            if args.baseline:
                phases.append(run_phase(BASELINE, baseline_rooms, args, packets, tmp, children))
            for rooms in args.scale or []:
                scale.append(
                    [
                        scale_phase(name, rooms, args, packets, tmp, children, path)
                        for name, path in servers
                    ]
                )
    except (BenchError, KeyboardInterrupt) as exc:
        print(f"rooms.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()
        if args.keep_data:
            print(f"rooms.py: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - began
    print(report(phases, args, took))
    if scale:
        print(scale_report(scale))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    },
                    "took_s": took,
                    "phases": [p.to_json() for p in phases],
                    "scale": [
                        [
                            {"name": p.name, "rooms": p.rooms, "not_measured": p.reason}
                            if isinstance(p, NotMeasured)
                            else p.to_json()
                            for p in phases
                        ]
                        for phases in scale
                    ],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
