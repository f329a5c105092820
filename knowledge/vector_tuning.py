"""How big the IVF vector index's partitions are and how many of them a search reads, from the row count.

An IVF index splits the vectors into partitions around k-means centroids; a search scans the
`nprobes` partitions nearest the query. Recall depends on the share of the table scanned, so a
fixed probe count loses recall as partitions multiply (issue 18: 0.867 at 1M chunks with 20
probes of ~244). The plan keeps partitions near a constant size and probes a share of them that
shrinks slowly as they multiply, so recall@10 holds at >= 0.95 from 50k to 1M chunks and beyond
(benchmarks/RESULTS.md, "Knowledge at a million chunks").

The index is IVF_SQ: each partition holds its vectors as 8-bit scalar-quantised codes, a quarter of
the bytes of IVF_FLAT's float32, so a search scanning the same share reads a quarter as much (at 1M
chunks the vector query's p50 fell from ~72 to ~37 ms at the same probes). The candidates are then
re-ranked on their exact float32 vectors (`refine_factor`), so the distances the confidence judge
reads are exact.

A plan is trained for one row count; the index is rebuilt with a fresh plan once the table has
grown or shrunk by `REBUILD_FACTOR`, and the plan is stored in the table's versioned config so
every search uses the probes of the index it actually reads (a rollback restores both together).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

PARTITION_ROWS = 4096  # rows per IVF partition at training time (LanceDB's own default for IVF_FLAT)
REBUILD_FACTOR = 2.0  # retrain once the table is this many times larger (or smaller) than at training
# (partitions, share of them probed) at two measured sizes, 100k and 1M rows: more partitions cut
# finer, so the neighbours of a query sit in a smaller share of them. Between them the share falls
# linearly in log(partitions); past 1M it keeps falling at that rate, never below MIN_PROBE_SHARE
# (extrapolated, not measured). Chosen on the clustered MiniLM-shaped vectors and real questions of
# benchmarks/search_latency.py, the same generator that benchmark then scores (other builds).
# IVF_SQ lets the 1M share rise from IVF_FLAT's 0.35 to 0.5 for less time than IVF_FLAT took at
# 0.35: the worst query's recall, 0.7-0.9 over builds at 0.35, was 0.9-1.0 over four builds at 0.5.
SMALL_INDEX_SHARE = (24, 0.85)
LARGE_INDEX_SHARE = (244, 0.5)
# Above the share's fall per e-fold of partitions (0.151 with the two points above), so that
# share * partitions, the probes, never falls as partitions multiply (tests check it to 5M rows).
MIN_PROBE_SHARE = 0.25
MIN_NPROBES = 20  # below this a small index is cheaper to scan widely than to risk a missed neighbour
INDEX_KIND = "IVF_SQ"  # what plan_for builds; an index of another kind is retrained by the next refresh that writes
REFINE_FACTOR = 2  # re-rank twice the asked-for candidates on exact vectors (1 already gave exact distances)


@dataclass(frozen=True)
class VectorIndexPlan:
    """The shape of one built vector index and the search effort that matches it."""

    rows: int  # row count the index was trained on
    partitions: int
    nprobes: int
    refine_factor: int | None = None  # None: exact distances already (IVF_FLAT), nothing to re-rank
    kind: str = "IVF_FLAT"  # plans stored before IVF_SQ carry no kind: they describe IVF_FLAT indexes

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VectorIndexPlan | None:
        """None for anything that is not a plan this code wrote (an older or foreign index)."""
        try:
            data = json.loads(text)
            plan = cls(
                rows=int(data["rows"]),
                partitions=int(data["partitions"]),
                nprobes=int(data["nprobes"]),
                refine_factor=None if data.get("refine_factor") is None else int(data["refine_factor"]),
                kind=str(data.get("kind", "IVF_FLAT")),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return plan if plan.rows > 0 and plan.partitions > 0 and plan.nprobes > 0 else None


def probe_share(partitions: int) -> float:
    (small, small_share), (large, large_share) = SMALL_INDEX_SHARE, LARGE_INDEX_SHARE
    if partitions <= small:
        return small_share
    slope = (large_share - small_share) / (math.log(large) - math.log(small))
    return max(MIN_PROBE_SHARE, small_share + slope * (math.log(partitions) - math.log(small)))


def plan_for(rows: int) -> VectorIndexPlan:
    """The partitions and probes for an index trained on `rows` vectors (a pure function of it)."""
    if rows <= 0:
        raise ValueError(f"a vector index needs rows to train on, got {rows}")
    partitions = max(1, round(rows / PARTITION_ROWS))
    nprobes = min(partitions, max(MIN_NPROBES, math.ceil(probe_share(partitions) * partitions)))
    return VectorIndexPlan(
        rows=rows, partitions=partitions, nprobes=nprobes, refine_factor=REFINE_FACTOR, kind=INDEX_KIND
    )


def needs_rebuild(built: VectorIndexPlan | None, rows: int) -> bool:
    """Retrain when no plan of ours describes the index, or the table has drifted `REBUILD_FACTOR`
    from the size it was trained at (new rows join the old partitions until then, making them
    larger, so the same probes scan a growing share and recall holds while latency creeps up), or
    the index is of another kind than this release builds (an IVF_FLAT index of an older release)."""
    if built is None or built.kind != INDEX_KIND:
        return True
    return rows >= built.rows * REBUILD_FACTOR or rows * REBUILD_FACTOR <= built.rows
