"""Owned asyncio tasks: whoever creates a task keeps its reference and ends it here."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended. None, a finished task and the calling
    task itself (a task closing what it belongs to) are left as they are.

    The task's CancelledError ends here: owners call this on close, often from a
    shutdown that is itself being cancelled, and must go on closing what comes next."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
