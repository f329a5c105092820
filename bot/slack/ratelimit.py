"""Fair use: a per-user rate (questions per minute) and a global cap on answers in flight.

Nobody is refused: a question over the limit waits its turn, and the asker is told so at once
("you're in the queue") instead of meeting silence.

With replicas (`SharedLimits`, from PostgreSQL) the same two limits hold for all of them together:
a user's questions are counted wherever they land, and `global_concurrency` caps the answers in
flight across the replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.coordination import SharedLimits
    from bot.settings import Settings

SLOT_POLL_SECONDS = 0.1  # how often a queued answer looks for a free shared slot


class AnswerLimiter:
    def __init__(
        self,
        per_user_per_window: int,
        concurrency: int,
        *,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedLimits | None = None,
    ) -> None:
        self.shared = shared
        self.capacity = max(1, concurrency)
        self.per_user = max(1, per_user_per_window)
        self.window = window_seconds
        self._clock = clock
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._starts: dict[str, deque[float]] = defaultdict(deque)

    @classmethod
    def from_settings(cls, settings: Settings, shared: SharedLimits | None = None) -> AnswerLimiter:
        return cls(settings.user_rate_per_minute, settings.global_concurrency, shared=shared)

    def _reserve(self, user: str) -> float:
        """Book the user's next start time; returns how long to wait for it (0: now)."""
        now = self._clock()
        starts = self._starts[user]
        while starts and starts[0] <= now - self.window:
            starts.popleft()
        at = now if len(starts) < self.per_user else starts[-self.per_user] + self.window
        starts.append(at)
        return max(0.0, at - now)

    @asynccontextmanager
    async def slot(self, user: str, on_queued: Callable[[float], Awaitable[None]]) -> AsyncIterator[None]:
        """Hold one answer slot; `on_queued(estimated_seconds)` runs once if the asker has to wait."""
        if self.shared is not None:
            async with self._shared_slot(self.shared, user or "anonymous", on_queued):
                yield
            return
        delay = self._reserve(user or "anonymous")
        if delay > 0 or self._slots.locked():
            await on_queued(delay)
        if delay > 0:
            await asyncio.sleep(delay)
        async with self._slots:
            yield

    @asynccontextmanager
    async def _shared_slot(
        self, shared: SharedLimits, user: str, on_queued: Callable[[float], Awaitable[None]]
    ) -> AsyncIterator[None]:
        delay = await shared.reserve(user, self.per_user, self.window)
        slot = None if delay > 0 else await shared.try_slot(self.capacity)
        if delay > 0 or slot is None:
            await on_queued(delay)
        if delay > 0:
            await asyncio.sleep(delay)
        while slot is None:
            slot = await shared.try_slot(self.capacity)
            if slot is None:
                await asyncio.sleep(SLOT_POLL_SECONDS)
        try:
            yield
        finally:
            await shared.release_slot(slot)
