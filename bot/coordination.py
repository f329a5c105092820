"""What replicas must agree on besides the logs: the refresh lease, once-per-period jobs, fair use.

`LocalCoordination` is the embedded default (one process): the index's own file lock is the refresh
lease, every scheduled job is this process's, and fair use is counted in memory
(`bot/slack/ratelimit.py`). `bot.postgres.coordination.PostgresCoordination` is the replicated
one: advisory locks and shared tables in the database the logs live in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.store import Store
    from knowledge.embeddings import Embedder
    from knowledge.index import KnowledgeIndex


class SharedLimits(Protocol):
    """Fair use counted across replicas: per-user answer starts and the answers in flight."""

    async def reserve(self, user: str, per_window: int, window_seconds: float) -> float:
        """Book the user's next answer start; seconds to wait for it (0: now)."""
        ...

    async def try_slot(self, capacity: int) -> int | None:
        """Take one of `capacity` answer slots shared by all replicas; None when all are taken."""
        ...

    async def release_slot(self, slot: int) -> None: ...


class Coordination(Protocol):
    def lease(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold the named lease for the block: True if this replica got it, False if another holds it."""
        ...

    async def claim_run(self, job: str, period: str) -> bool:
        """True for exactly one caller per (job, period), whichever replica asks (the weekly digest)."""
        ...

    @property
    def shared_limits(self) -> SharedLimits | None: ...

    async def aclose(self) -> None: ...


class LocalCoordination:
    """One process: nothing to agree with anyone."""

    @asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[bool]:
        yield True  # the index's file lock still refuses a second refresh in this data directory

    async def claim_run(self, job: str, period: str) -> bool:
        return True  # the scheduler's own state file already records the run

    @property
    def shared_limits(self) -> SharedLimits | None:
        return None

    async def aclose(self) -> None:
        return None


def open_coordination(settings: Settings, store: Store) -> Coordination:
    """The database's coordination when the logs are in PostgreSQL, else the local one."""
    from bot.store import InteractionStore

    if isinstance(store, InteractionStore):
        return LocalCoordination()
    from bot.postgres.coordination import PostgresCoordination
    from bot.postgres.store import PostgresStore

    assert isinstance(store, PostgresStore), type(store)
    return PostgresCoordination(store)


def open_index(settings: Settings, embedder: Embedder | None = None) -> KnowledgeIndex:
    """The knowledge index with this deployment's writer rule: a local index guards itself with its
    file lock; one on object storage is written only by the holder of the database's writer lock
    (or, with no database, by the process told it is the only writer; others refuse to write)."""
    from knowledge.index import KnowledgeIndex

    writer_lock = None
    if settings.index_uri and settings.database_url is not None:
        from bot.postgres.coordination import index_writer_lock

        writer_lock = index_writer_lock(settings.database_url.get_secret_value())
    return KnowledgeIndex.from_settings(settings, embedder, writer_lock=writer_lock)
