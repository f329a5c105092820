"""Which sources a refresh reads, and the scheduled sync `serve` runs: one task per source interval.

Only one process may write an index, and its writer lock enforces that: the file lock on one data
directory, PostgreSQL's index-writer lock for an index on object storage shared by replicas (each
replica's scheduler tries; the one that gets the lock syncs, the others skip that round). The
`SyncLease` seam may decide earlier who syncs; the default lease says yes and leaves it to the lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from bot.engine.calibration import refresh_calibrated
from bot.settings import Settings
from knowledge.connectors.catalog import Catalog, load_catalog
from knowledge.connectors.registry import SourceSpec
from knowledge.index import KnowledgeIndex, RefreshInProgress, RefreshReport

log = logging.getLogger(__name__)

Spec = str | SourceSpec
SyncRefresh = Callable[[KnowledgeIndex, Sequence[Spec], Settings], Awaitable[RefreshReport]]


def catalog_of(settings: Settings) -> Catalog | None:
    """The sources file when it exists (a bad one raises CatalogError naming the mistake)."""
    path = Path(settings.sources_file)
    return load_catalog(path) if path.is_file() else None


def configured_sources(settings: Settings, requested: Sequence[str] = ()) -> list[Spec]:
    """`--source` values (a catalog name picks that entry with its options), else the sources
    file's entries, else SUPPORTBOT_SOURCES."""
    catalog = catalog_of(settings)
    if requested:
        return [catalog.sources.get(item, item) if catalog else item for item in requested]
    if catalog is not None:
        return list(catalog.sources.values())
    return list(settings.sources)


class SyncLease(Protocol):
    """May this replica sync `source` now? Released after the sync."""

    async def acquire(self, source: str) -> bool: ...

    async def release(self, source: str) -> None: ...


class LocalLease:
    """One process per data directory is already guaranteed by the index's refresh lock."""

    async def acquire(self, source: str) -> bool:
        return True

    async def release(self, source: str) -> None:
        return None


class SourceSyncScheduler:
    """A background job of `serve`: every source with an `every:` interval syncs on its own clock.
    Syncs of one process run one at a time (they share the index's write lock); a sync that finds
    another process refreshing skips that round."""

    def __init__(
        self,
        index: KnowledgeIndex,
        settings: Settings,
        specs: Sequence[SourceSpec],
        *,
        lease: SyncLease | None = None,
        on_report: Callable[[SourceSpec, RefreshReport], Awaitable[None]] | None = None,
        refresh: SyncRefresh | None = None,
    ) -> None:
        self.index = index
        # `serve` hands in the eval-gated refresh (evals/gate.py); the default refreshes and calibrates
        self.refresh: SyncRefresh = refresh or refresh_calibrated
        self.settings = settings
        self.specs = [spec for spec in specs if spec.every_seconds]
        self.lease = lease or LocalLease()
        self.on_report = on_report
        self.reports: list[RefreshReport] = []
        self._one_at_a_time = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def sync_once(self, spec: SourceSpec) -> RefreshReport | None:
        if not await self.lease.acquire(spec.uri):
            return None
        try:
            async with self._one_at_a_time:
                report = await self.refresh(self.index, [spec], self.settings)
        except RefreshInProgress:
            log.info("scheduled sync of %s skipped: another refresh is running", spec.uri)
            return None
        finally:
            await self.lease.release(spec.uri)
        self.reports.append(report)
        level = logging.WARNING if report.failed_sources else logging.INFO
        log.log(level, "scheduled sync of %s: %s", spec.uri, report.summary)
        if self.on_report is not None:
            await self.on_report(spec, report)
        return report

    async def _every(self, spec: SourceSpec) -> None:
        assert spec.every_seconds
        while True:
            try:
                await self.sync_once(spec)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end the schedule
                log.exception("scheduled sync of %s failed", spec.uri)
            await asyncio.sleep(spec.every_seconds)

    def start(self) -> list[asyncio.Task[None]]:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(spec), name=f"sync {spec.uri}") for spec in self.specs]
        return self._tasks

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
