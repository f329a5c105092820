"""Background work started after Slack got its ack: referenced until done, failures logged.

A bare `asyncio.create_task` can be garbage-collected mid-flight and its exception is only
noticed at interpreter exit; this set keeps every task alive and reports what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the work in flight (and any it starts) to finish; TimeoutError after `timeout`
        seconds, with the tasks left running (a shutdown records them before cancelling them)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{len(self._tasks)} task(s) still running after {timeout} s")
            await asyncio.wait(set(self._tasks), timeout=remaining)  # unlike gather, never cancels them

    async def close(self) -> None:
        """Cancel whatever is still running; used on shutdown."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
