"""A bounded set whose members expire: remembers recent event ids, answered messages and threads.

Slack redelivers events it thinks were lost and sends one message as several events; the bot
must act once. Memory stays bounded however long the process runs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class TTLSet:
    def __init__(self, ttl_seconds: float, max_size: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl_seconds
        self.max_size = max_size
        self._clock = clock
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()

    def _prune(self) -> None:
        now = self._clock()
        while self._expiry and (len(self._expiry) > self.max_size or next(iter(self._expiry.values())) <= now):
            self._expiry.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        self._prune()
        return key in self._expiry

    def add(self, key: Hashable) -> None:
        self._expiry.pop(key, None)
        self._expiry[key] = self._clock() + self.ttl
        self._prune()

    def discard(self, key: Hashable) -> None:
        self._expiry.pop(key, None)

    def first_time(self, key: Hashable) -> bool:
        """True the first time a key is seen within the TTL (and remembers it)."""
        if key in self:
            return False
        self.add(key)
        return True

    def __len__(self) -> int:
        self._prune()
        return len(self._expiry)
