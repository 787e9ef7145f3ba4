"""Where a forwarded packet's CPU goes: py-spy's stacks of the server, in categories.

`bench/rooms.py --profile DIR` runs py-spy on the storyroom server over the measured
window (`--nonblocking`: the server is never paused). It writes collapsed stacks
(`DIR/<phase>.txt`), which :func:`categorise` sorts into the stages of a packet's trip
through the server and :func:`flame_graph` draws (`DIR/<phase>.svg`).

Each sample goes to the category of its innermost frame that matches a rule, so a
stack ending in pylibsrtp's `protect` under aiortc's sender counts as "SRTP protect",
and one ending in the sender's own Python code as "aiortc sender".

py-spy leaves out threads it sees idle, but without pausing the process it takes a
thread that is runnable (woken, waiting for a core on a busy machine) or in disk I/O
for a working one. Stacks that end in a wait (epoll, a worker's empty queue, fsync)
are therefore counted apart, as "waiting", and the shares are of the rest; the table
scales them to the server's CPU time measured from /proc.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATE_HZ = 100
"""Samples per second per sampler."""

WAITING = "waiting (epoll, idle workers, fsync; not CPU)"
# Innermost frames that are a wait, not work: (function pattern, file pattern).
WAITS: list[tuple[str, str]] = [
    (r"select$", r"selectors\.py"),
    (r"_worker$", r"concurrent/futures/thread\.py"),
    (r"wait$", r"threading\.py"),
    (r"_sync$|fsync", r"recording/"),
    (r"decoder_worker$", r"aiortc/rtcrtpreceiver\.py"),
]
OURS = r"(storyroom|server)/"
"""Our package's frames: `storyroom/...` when installed, `server/...` from a checkout."""

# (category, function-name pattern or None, file-path pattern), innermost match wins;
# within one frame the first rule that matches.
RULES: list[tuple[str, str | None, str]] = [
    ("SRTP unprotect (pylibsrtp, C)", r"unprotect", r"pylibsrtp"),
    ("SRTP protect (pylibsrtp, C)", r"protect", r"pylibsrtp"),
    ("RTP parse (aiortc)", r"parse", r"aiortc/rtp\.py"),
    ("RTP serialise (aiortc)", r"serialize", r"aiortc/rtp\.py"),
    ("RTP objects, other (aiortc)", None, r"aiortc/rtp\.py"),
    ("RTCP (aiortc)", r"rtcp", r"aiortc/"),
    ("stats and levels timers", r"stats|levels", OURS + r"media/plane\.py"),
    ("stats and levels timers", r"getStats|_get_stats", r"aiortc/"),
    ("stats and levels timers", r"levels", OURS + r"room/"),
    ("recorder", None, OURS + r"recording/"),
    ("our tap and forward", None, OURS + r"media/"),
    ("aiortc sender (pack, packet loop)", None, r"aiortc/(rtcrtpsender|codecs/)"),
    ("aiortc receiver and DTLS routing", None, r"aiortc/(rtcrtpreceiver|rtcdtlstransport)"),
    ("ICE transport (aioice)", None, r"aiortc/rtcicetransport|aioice/"),
    ("socket send/receive (asyncio)", r"sendto|_read_ready|datagram_received|_sock_", r"asyncio/"),
    ("queue hops (asyncio Queue/Event)", None, r"asyncio/(queues|locks)\.py"),
    ("event loop (select, scheduling)", None, r"asyncio/|selectors\.py"),
    ("Socket.IO and HTTP", None, r"socketio/|engineio/|aiohttp/"),
]
OTHER = "other"

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass(frozen=True)
class Profile:
    samples: Counter[str]
    """Samples per category, waits included."""

    @property
    def working(self) -> int:
        return sum(n for category, n in self.samples.items() if category != WAITING)


def category_of(frames: list[str]) -> str:
    """The category of one stack (outermost frame first)."""
    leaf = _FRAME.match(frames[-1]) if frames else None
    if leaf and any(
        re.search(f, leaf["function"]) and re.search(p, leaf["file"]) for f, p in WAITS
    ):
        return WAITING
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        function, path = (match["function"], match["file"]) if match else (frame, "")
        for category, function_pattern, file_pattern in RULES:
            if re.search(file_pattern, path) and (
                function_pattern is None or re.search(function_pattern, function)
            ):
                return category
    return OTHER


def categorise(collapsed: Path) -> Profile:
    """Read py-spy's raw (collapsed) output: one `frame;frame;...;frame COUNT` a line."""
    samples: Counter[str] = Counter()
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples[category_of(stack.split(";"))] += int(count)
    return Profile(samples)


def start_sampler(pid: int, seconds: float, out: Path, name: str) -> subprocess.Popen[bytes]:
    """py-spy on `pid` for `seconds`, writing collapsed stacks to `out/<name>.txt`."""
    out.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [str(py_spy), "record", "--pid", str(pid), "--nonblocking", "--format", "raw"]
    command += ["--rate", str(RATE_HZ), "--duration", str(max(1, round(seconds)))]
    command += ["--output", str(out / f"{name}.txt")]
    with (out / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def table(profile: Profile, cpu_s: float, packets: int) -> list[str]:
    """Rows: category, share of the working samples, µs of server CPU per received packet."""
    lines = [f"{'where a packet CPU goes':<44} {'share':>6} {'us/packet':>10}"]
    working = max(1, profile.working)
    for category, count in profile.samples.most_common():
        if category == WAITING:
            continue
        share = count / working
        per_packet = 1e6 * cpu_s * share / max(1, packets)
        lines.append(f"{category:<44} {100 * share:5.1f}% {per_packet:10.1f}")
    lines.append(
        f"{'total (server CPU / received packets)':<44} {100.0:5.1f}% "
        f"{1e6 * cpu_s / max(1, packets):10.1f}"
    )
    waits = profile.samples[WAITING]
    lines.append(f"({WAITING}: {waits} samples beside {profile.working}, not counted)")
    return lines


def flame_graph(collapsed: Path, svg: Path, title: str) -> None:
    """An icicle-style flame graph of the collapsed stacks, waits left out: each frame a
    box as wide as its share of the samples, its callees below it."""
    root: dict[str, Any] = {"n": 0, "children": {}}
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if category_of(frames) == WAITING:
            continue
        node = root
        node["n"] += int(count)
        for frame in frames:
            node = node["children"].setdefault(frame, {"n": 0, "children": {}})
            node["n"] += int(count)
    width, row = 1600.0, 16
    boxes: list[str] = []
    depth_max = 0

    def draw(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal depth_max
        for frame, child in sorted(node["children"].items()):
            w = width * child["n"] / max(1, root["n"])
            if w >= 0.5:
                depth_max = max(depth_max, depth)
                label = f"{frame} ({child['n']} samples, {100 * child['n'] / root['n']:.1f}%)"
                text = html.escape(frame if w > 7 * len(frame) else frame[: int(w / 7)])
                hue = 20 + (hash(frame.split(" (")[0]) % 40)
                boxes.append(
                    f'<g><title>{html.escape(label)}</title><rect x="{x:.1f}" '
                    f'y="{24 + depth * row}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="hsl({hue},80%,60%)"/><text x="{x + 2:.1f}" '
                    f'y="{24 + depth * row + 12}">{text}</text></g>'
                )
                draw(child, x, depth + 1)
            x += w

    draw(root, 0.0, 0)
    height = 24 + (depth_max + 2) * row
    svg.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        'font-family="monospace" font-size="11">'
        f'<text x="4" y="16">{html.escape(title)} ({root["n"]} working samples)</text>'
        + "".join(boxes)
        + "</svg>\n"
    )
