"""The thread pipeline: the stages of a pass run on threads joined by small bounded
channels; the first failure stops them all and is raised in the caller.

The stages' heavy work (decoding, encoding, filtering) is C code that releases the
GIL, so threads are enough to use both cores; the bounded channels keep memory flat.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Stopped(Exception):
    """Another stage failed; this one gives up quietly."""


class Channel:
    """A small bounded queue between pipeline stages that gives up when `stop` is set."""

    def __init__(self, stop: threading.Event, size: int = 4) -> None:
        self.stop = stop
        self.items: queue.Queue[Any] = queue.Queue(size)

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Stopped

    def get(self) -> Any:
        while not self.stop.is_set():
            try:
                return self.items.get(timeout=0.1)
            except queue.Empty:
                continue
        raise Stopped


class Stages:
    """Worker threads of one pass: any failure stops them all and is re-raised."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def channel(self, size: int = 4) -> Channel:
        return Channel(self.stop, size)

    def start(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except Stopped:
                return  # another stage failed first: its error is the one raised
            except BaseException as error:
                self.errors.append(error)
                self.stop.set()

        thread = threading.Thread(target=run, name=f"finalize-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, failed: BaseException | None = None) -> None:
        if failed is not None and not isinstance(failed, Stopped):
            self.stop.set()
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
        if failed is not None:
            raise failed


def run_stages(stages: Stages, body: Callable[[], None]) -> None:
    """Run `body` (which starts the stages and feeds them) here, then join the stages;
    the first error of either is raised."""
    try:
        body()
    except BaseException as error:
        stages.join(error)
    stages.join()


def received(channel: Channel, count: int) -> Iterator[Any]:
    """The next `count` items of `channel`."""
    for _ in range(count):
        yield channel.get()
