"""The server's two clocks.

Timing (the recording clock, packet arrival, timers, intervals) must not jump when
the host's wall clock is stepped (NTP, an operator, a VM resume); labels people read
(when a cue was given, `OriginationDate`) should say the wall-clock time.

`steady()` serves timing: the wall clock as it read when this process started,
advanced by `time.monotonic()`. It never jumps, and it still looks like a Unix time,
so logs that carry it stay readable and comparable within one process. `wall()` is
for labels only.
"""

from __future__ import annotations

import time

_EPOCH = time.time() - time.monotonic()


def steady() -> float:
    """Seconds on the steady clock (monotonic, anchored to the wall clock at start)."""
    return _EPOCH + time.monotonic()


def wall() -> float:
    """The wall clock, for labels only: it may jump forwards or backwards."""
    return time.time()
