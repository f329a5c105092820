"""Which sources a refresh reads, and the scheduled sync `serve` runs: one task per source interval.

Only one process may write an index. On one data directory the index's refresh lock enforces it;
across replicas (PostgreSQL configured) the scale-out work's coordination does (bot/coordination.py):
each interval of a source is a (job, period) that exactly one replica claims, as the weekly eval's
week is, and the claimed sync runs under the same `refresh` lease as `/kb-refresh` (and, for an
index on object storage, under the index's writer lock too, as every write is). Every replica
wakes at the interval's boundary; a replica that died leaves the next interval to the survivors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bot.coordination import Coordination, LocalCoordination
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


class SourceSyncScheduler:
    """A background job of `serve`: every source with an `every:` interval syncs once per interval.
    Syncs of one process run one at a time (they share the index's write lock); a round that finds
    another refresh running (here or on another replica) is skipped."""

    def __init__(
        self,
        index: KnowledgeIndex,
        settings: Settings,
        specs: Sequence[SourceSpec],
        *,
        coordination: Coordination | None = None,
        on_report: Callable[[SourceSpec, RefreshReport], Awaitable[None]] | None = None,
        refresh: SyncRefresh | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        # `serve` hands in the eval-gated refresh (evals/gate.py); the default refreshes and calibrates
        self.refresh: SyncRefresh = refresh or refresh_calibrated
        self.settings = settings
        self.specs = [spec for spec in specs if spec.every_seconds]
        self.coordination: Coordination = coordination or LocalCoordination()
        self.on_report = on_report
        self.clock = clock  # wall time: replicas on different hosts must agree on the intervals
        self.reports: list[RefreshReport] = []
        self.synced: list[tuple[str, int]] = []  # (source, interval number) this replica synced
        self.last_interval: dict[str, int] = {}  # source -> the interval this replica last synced
        self._one_at_a_time = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def interval_of(self, spec: SourceSpec) -> int:
        assert spec.every_seconds
        return int(self.clock() // spec.every_seconds)

    async def sync_once(self, spec: SourceSpec) -> RefreshReport | None:
        """Sync `spec` if this replica wins its current interval; None when another replica has it,
        a refresh is running, or this replica already synced this interval."""
        interval = self.interval_of(spec)
        if self.last_interval.get(spec.uri) == interval:
            return None  # woke early (wall time slewed behind the sleep): this interval is done here
        async with self._one_at_a_time, self.coordination.lease("refresh") as held:
            if not held:
                log.info("scheduled sync of %s skipped: another replica is refreshing", spec.uri)
                return None
            if not await self.coordination.claim_run(f"sync:{spec.uri}", str(interval)):
                return None  # another replica synced this interval already
            try:
                report = await self.refresh(self.index, [spec], self.settings)
            except RefreshInProgress:
                log.info("scheduled sync of %s skipped: another refresh is running", spec.uri)
                return None
        self.reports.append(report)
        self.synced.append((spec.uri, interval))
        self.last_interval[spec.uri] = interval
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
            except Exception:  # one bad round must not end the schedule (a database outage included)
                log.exception("scheduled sync of %s failed", spec.uri)
            await asyncio.sleep(spec.every_seconds - self.clock() % spec.every_seconds)  # the next boundary

    def start(self) -> list[asyncio.Task[None]]:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(spec), name=f"sync {spec.uri}") for spec in self.specs]
        return self._tasks

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
