"""Whether a participant's capture uploads starve their live audio on a narrow uplink:
the live audio's loss and queueing delay with and without the capture, in one run.

    .venv/bin/python bench/capture_link.py                      # 60 s takes, 240 kbit/s
    .venv/bin/python bench/capture_link.py --seconds 20         # smoke
    .venv/bin/python bench/capture_link.py --rate-kbit 400

One real server on 127.0.0.1 (in this process, in a private network namespace with only
`lo`) and, per configuration, a fresh Debian Chromium seated as participant a, whose
fake microphone plays speech; b and the facilitator are Socket.IO clients. a's uplink
is a real bottleneck: a Linux `htb` class of `--rate-kbit` with a `--queue-ms` FIFO on
`lo`, which everything a's page sends goes through (its media, to its own impairment
relay link's port; its HTTP and Socket.IO, to the server's port) and nothing else does.
During the take a's capture uploads are held back for `--backlog-s` (a path that
failed for a while), so when they are let through a backlog of that many seconds of
capture meets the live audio in the bottleneck's queue: the worst case for the live
audio short of an outage.

Configurations: `baseline` (MediaRecorder removed before the page loads: no capture)
and `capture` (as shipped). Figures from the server's own timing log of a's stem:
packets lost on the way in (RTP sequence gaps), and the one-way queueing delay (each
packet's arrival against its RTP timestamp, above the take's minimum: p50, p99, max),
and how long after stop the page said the capture was saved.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from playwright.async_api import async_playwright  # noqa: E402

from storyroom.netns import isolate_network  # noqa: E402
from support.bottleneck import arrivals, internet_sized_loopback, narrow_take  # noqa: E402
from support.browser import (  # noqa: E402
    write_speech,
)
from support.server import (  # noqa: E402
    RunningServer,
    serving,
)

BACKLOG_AT_S = 10.0
"""When, after the take began, the held capture uploads are let through."""


def say(what: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


@dataclass
class Figures:
    name: str
    packets: int
    lost: int
    delay_ms: tuple[float, float, float]
    """Queueing delay over the take's minimum: p50, p99, max."""
    queue_drops: int
    """Packets of either kind the bottleneck dropped (TCP's are resent)."""
    saved_s: float | None


async def one_take(
    server: RunningServer, wav: Path, name: str, args: argparse.Namespace, *, capture: bool
) -> Figures:
    say(f"{name}: a take of {args.seconds:.0f} s")
    async with async_playwright() as pw:
        take = await narrow_take(
            server,
            pw,
            wav,
            rate_kbit=args.rate_kbit,
            queue_ms=args.queue_ms,
            held_s=args.backlog_s,
            take_s=args.seconds,
            capture=capture,
        )
    packets, lost, delay = arrivals(take.rec_dir, "a")
    return Figures(name, packets, lost, delay, take.drops, take.saved_s)


def print_table(rows: list[Figures], args: argparse.Namespace) -> None:
    print(
        f"uplink {args.rate_kbit} kbit/s, FIFO {args.queue_ms:.0f} ms, take {args.seconds:.0f} s, "
        f"capture uploads held for the first {args.backlog_s:.0f} s"
    )
    header = f"{'live audio of seat a':34}" + "".join(f"{r.name:>14}" for r in rows)
    print(header)
    print("-" * len(header))

    def line(label: str, values: list[str]) -> None:
        print(f"{label:34}" + "".join(f"{v:>14}" for v in values))

    line("packets received", [str(r.packets) for r in rows])
    line("packets lost", [str(r.lost) for r in rows])
    line("loss, %", [f"{100 * r.lost / max(1, r.packets + r.lost):.2f}" for r in rows])
    line("queueing delay p50, ms", [f"{r.delay_ms[0]:.0f}" for r in rows])
    line("queueing delay p99, ms", [f"{r.delay_ms[1]:.0f}" for r in rows])
    line("queueing delay max, ms", [f"{r.delay_ms[2]:.0f}" for r in rows])
    line("bottleneck drops (any)", [str(r.queue_drops) for r in rows])
    line(
        "saved after stop, s", [f"{r.saved_s:.1f}" if r.saved_s is not None else "-" for r in rows]
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="capture-link-") as tmp:
        folder = Path(tmp)
        wav = write_speech(folder / "speech.wav", seconds=20.0)
        async with serving(folder / "data") as server:
            rows = [
                await one_take(server, wav, "baseline", args, capture=False),
                await one_take(server, wav, "capture", args, capture=True),
            ]
    print_table(rows, args)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="take length")
    parser.add_argument("--rate-kbit", type=int, default=240, help="a's uplink")
    parser.add_argument("--queue-ms", type=float, default=300.0, help="its FIFO, at that rate")
    parser.add_argument("--backlog-s", type=float, default=BACKLOG_AT_S, help="uploads held")
    args: Any = parser.parse_args()
    if args.backlog_s >= args.seconds:
        parser.error("--backlog-s must be shorter than --seconds")
    return args


if __name__ == "__main__":
    parsed = arguments()
    if not isolate_network():
        sys.exit("capture_link.py: needs a private network namespace (run as root)")
    internet_sized_loopback()
    asyncio.run(main(parsed))
