"""Self-calibration: each index version learns, from itself, where to draw the escalation line.

The confidence score ranks questions well in every domain we measured, but its level does not
carry: a help center whose staff write "money back" where the page says "refund" scores lower
across the board than the docs it was fitted on, so one fixed threshold escalates half of its
answerable questions. No deployment has labels on day one, but every index can ask itself:

1. write probes from its own sections (`bot/engine/probes.py`);
2. search each probe twice: as is (answerable), and with its section masked out, siblings left in
   (the unanswerable twin: relevant-looking knowledge that lacks the answer);
3. place the escalation line at a fixed quantile of the twins' scores ("escalate unless the
   question beats what most near misses of *this* index score"), and the plain-answer line at a
   higher one.

The raw score is then mapped onto a common scale on which the configured thresholds
(`caveat_threshold`, `answer_threshold`) mean the same thing on every index: a raw score at the
escalation line becomes exactly `caveat_threshold`. The quantiles are the only fitted constants;
they were chosen leave-one-domain-out (benchmarks/escalation.py, benchmarks/RESULTS.md).

A calibration is stored per tagged index version (`<index>/calibration/v<version>.json`), so a
rollback serves the calibration of the version it restores. An incremental refresh re-scores only
the probes of sections that changed; a refresh that changes nothing never gets here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from bot.engine import confidence
from bot.engine.probes import PROBES_VERSION, Probe, Section, make_probes, sections_from_chunks
from bot.engine.terms import TermStats

if TYPE_CHECKING:
    import numpy as np

    from bot.settings import Settings
    from knowledge.connectors.registry import SourceSpec
    from knowledge.index import KnowledgeIndex, RefreshReport
    from knowledge.search import Searcher
    from knowledge.storage import Sidecar

log = logging.getLogger(__name__)

METHOD = "twin-quantile-v1"
ESCALATE_QUANTILE = 0.80  # share of masked twins that fall below the escalation line
# (0.80 meets both targets on two of three domains in-sample; `--fit`'s max-min rule says 0.84, which
# meets them on none: benchmarks/RESULTS.md, "Sixth signal")
ANSWER_QUANTILE = 0.95  # ... below the plain-answer line (between the two: an answer with a caveat)
PROBE_LIMIT = 150  # probes per index: enough for a stable 80th percentile, cheap next to embedding
MIN_PROBES = 30  # fewer usable sections than this: too little to calibrate, the raw score is used
SAMPLE_DOCUMENTS = 1_000  # a larger index writes its probes from this many documents (read_sections)
RESCORE_ALL_SHARE = 0.3  # when more than this share of probes changed, re-score every probe
KEPT_SIGNALS = (*confidence.COEFFICIENTS, "second_similarity", "rank_agreement", "question_terms", "sources")


class ScoredProbe(BaseModel):
    """One probe and the signals of its two searches (raw, so a new score needs no new search)."""

    section_key: str
    kind: str
    question: str
    found: bool  # the answerable search retrieved the probe's own document
    answerable: dict[str, float]
    masked: dict[str, float]


def score_fingerprint() -> str:
    """What the stored lines depend on besides the probes: the score's constants and the quantiles.
    A calibration made under other constants is refitted from its stored signals (no new search)."""
    parts = [
        METHOD,
        repr(confidence.INTERCEPT),
        repr(sorted(confidence.COEFFICIENTS.items())),
        repr(ESCALATE_QUANTILE),
        repr(ANSWER_QUANTILE),
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:12]


class Calibration(BaseModel):
    index_version: int
    method: str = METHOD
    fingerprint: str = Field(default_factory=score_fingerprint)
    probes_version: str = PROBES_VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    escalate_quantile: float = ESCALATE_QUANTILE
    answer_quantile: float = ANSWER_QUANTILE
    raw_escalate: float  # raw score below which a question is escalated
    raw_answer: float  # raw score at or above which it is answered without a caveat
    separation_auroc: float | None  # how well the score tells probes from their twins
    probes: list[ScoredProbe]
    rescored: int = 0  # probes searched for this version (the rest were reused)
    seconds: float = 0.0

    @property
    def pairs(self) -> int:
        return len(self.probes)

    def to_scale(self, raw: float, *, caveat_at: float, answer_at: float) -> float:
        """Raw score -> the common scale: piecewise linear through (raw_escalate, caveat_at) and
        (raw_answer, answer_at), 0 and 1 fixed. Monotone, so the ranking is untouched."""
        points = [(0.0, 0.0), (self.raw_escalate, caveat_at), (self.raw_answer, answer_at), (1.0, 1.0)]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if raw <= x1:
                return round(y0 + (y1 - y0) * ((raw - x0) / (x1 - x0) if x1 > x0 else 1.0), 4)
        return 1.0

    def summary(self) -> dict[str, Any]:
        """What `refresh`, `status`, `/kb-status` and the eval report show."""
        return {
            "method": self.method,
            "index_version": self.index_version,
            "pairs": self.pairs,
            "separation_auroc": self.separation_auroc,
            "escalate_below_raw": round(self.raw_escalate, 4),
            "answer_from_raw": round(self.raw_answer, 4),
            "escalate_quantile": self.escalate_quantile,
            "rescored": self.rescored,
            "seconds": round(self.seconds, 2),
            "created_at": self.created_at.isoformat(timespec="seconds"),
        }


def describe(summary: dict[str, Any] | None) -> str:
    """One line for people: which calibration is in force and how good it is."""
    if not summary:
        return (
            f"not calibrated (fewer than {MIN_PROBES} usable sections, or an index from before calibration: "
            "`supportbot calibrate`); fixed thresholds on the raw score"
        )
    auroc = summary.get("separation_auroc")
    return (
        f"calibrated on index v{summary['index_version']}: {summary['pairs']} probe pairs, "
        f"separation AUROC {auroc:.2f}, escalates below raw {summary['escalate_below_raw']:.3f}"
        if auroc is not None
        else f"calibrated on index v{summary['index_version']}"
    )


# ------------------------------------------------------------------------------------------ fitting


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without numpy in the serving path."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def separation(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    if not positives or not negatives:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 4)


def fit(
    index_version: int,
    probes: list[ScoredProbe],
    *,
    escalate_quantile: float = ESCALATE_QUANTILE,
    answer_quantile: float = ANSWER_QUANTILE,
    rescored: int = 0,
    seconds: float = 0.0,
) -> Calibration:
    """The lines from the twins' raw scores; the separation from both sides."""
    twins = [confidence.score(p.masked) for p in probes]
    found = [confidence.score(p.answerable) for p in probes]
    escalate = quantile(twins, escalate_quantile)
    answer = max(quantile(twins, answer_quantile), escalate + 1e-3)
    return Calibration(
        index_version=index_version,
        escalate_quantile=escalate_quantile,
        answer_quantile=answer_quantile,
        raw_escalate=round(escalate, 4),
        raw_answer=round(min(answer, 0.999), 4),
        separation_auroc=separation(found, twins),
        probes=probes,
        rescored=rescored,
        seconds=seconds,
    )


# ------------------------------------------------------------------------------------------ storage


CALIBRATION_DIR = "calibration"


def calibration_name(version: int) -> str:
    return f"{CALIBRATION_DIR}/v{version}.json"


def save(sidecar: Sidecar, calibration: Calibration) -> str:
    """Atomically (the sidecar's promise): a crash never leaves half a calibration."""
    name = calibration_name(calibration.index_version)
    sidecar.write_text(name, calibration.model_dump_json())
    return name


def load(sidecar: Sidecar, version: int) -> Calibration | None:
    name = calibration_name(version)
    try:
        text = sidecar.read_text(name)
        if text is None:
            return None
        found = Calibration.model_validate_json(text)
    except ValueError as exc:  # a damaged file must not take answering down: raw scores are the fallback
        log.warning("ignoring unreadable calibration %s: %s", name, exc)
        return None
    if found.fingerprint != score_fingerprint():  # the score changed since (an upgrade): same probes, new lines
        found = fit(found.index_version, found.probes, rescored=0, seconds=found.seconds)
    return found


def latest(sidecar: Sidecar, before: int | None = None) -> Calibration | None:
    """The newest stored calibration (at or below version `before`), the base of an incremental one."""
    stems = (name.removesuffix(".json") for name in sidecar.names(CALIBRATION_DIR) if name.endswith(".json"))
    versions = sorted((int(stem[1:]) for stem in stems if stem.startswith("v") and stem[1:].isdigit()), reverse=True)
    for version in versions:
        if before is None or version <= before:
            found = load(sidecar, version)
            if found is not None:
                return found
    return None


# ------------------------------------------------------------------------------------------ running


def _kept(values: dict[str, Any]) -> dict[str, float]:
    return {name: float(values.get(name, 0.0)) for name in KEPT_SIGNALS}


def score_probe(
    searcher: Searcher,
    probe: Probe,
    section: Section,
    vector: np.ndarray,
    stats: TermStats | None,
    k: int,
    per_doc: int,
) -> ScoredProbe:
    """One candidate retrieval through the serving path, fused with and without the probe's section,
    and the judge's signals for each (sync: run in a thread)."""
    from bot.engine.pipeline import to_retrieved

    found_hits, masked_hits = searcher.search_masked(
        probe.question, vector, k, per_doc=per_doc, masked=set(section.chunk_ids)
    )
    signals: dict[str, dict[str, float]] = {}
    for name, hits in (("answerable", found_hits), ("masked", masked_hits)):
        chunks = [to_retrieved(hit) for hit in hits]
        signals[name] = _kept(confidence.signals(probe.question, chunks, stats=stats))
    found = any(hit.doc_id == section.doc_id for hit in found_hits)
    return ScoredProbe(section_key=probe.section_key, kind=probe.kind, question=probe.question, found=found, **signals)


def sampled_documents(keys: Sequence[tuple[str, str]], limit: int = SAMPLE_DOCUMENTS) -> list[tuple[str, str]]:
    """A seeded sample of `limit` documents, chosen by id alone: editing one document never moves
    the others in or out, so the probes of an unchanged sample stay cached."""
    return sorted(keys, key=lambda key: hashlib.sha256(f"{key[0]}\0{key[1]}".encode()).hexdigest())[:limit]


def read_sections(index: KnowledgeIndex) -> list[Section]:
    """The sections probes are written from: every document's on an index of up to SAMPLE_DOCUMENTS
    documents, a fixed sample's on a larger one, so a refresh of a million chunks reads the text of
    a few thousand (plus a projected scan of ids and hashes), not all of it."""
    from knowledge.index import documents_condition, scan

    columns = ["chunk_id", "doc_id", "title", "heading", "text", "position"]
    documents = list(index.doc_hashes())
    where = documents_condition(sampled_documents(documents)) if len(documents) > SAMPLE_DOCUMENTS else None
    return sections_from_chunks(
        row for batch in scan(index.table.to_lance(), columns, where) for row in batch.to_pylist()
    )


def calibrate_sync(
    index: KnowledgeIndex,
    searcher: Searcher,
    stats: TermStats | None,
    *,
    version: int,
    previous: Calibration | None,
    k: int,
    per_doc: int,
    limit: int = PROBE_LIMIT,
) -> Calibration | None:
    started = time.perf_counter()
    sections = read_sections(index)
    probes = make_probes(sections, limit=limit, stats=stats)
    if len(probes) < MIN_PROBES:
        log.info("calibration skipped: %d usable probes (at least %d needed)", len(probes), MIN_PROBES)
        return None
    by_key = {section.key: section for section in sections}
    reusable = previous is not None and previous.probes_version == PROBES_VERSION
    cached = {(p.section_key, p.question): p for p in (previous.probes if previous and reusable else [])}
    fresh = [probe for probe in probes if (probe.section_key, probe.question) not in cached]
    if len(fresh) > RESCORE_ALL_SHARE * len(probes):
        cached, fresh = {}, probes  # much changed: neighbours and term rarity moved too
    vectors = dict(zip((p.question for p in fresh), index.embedder.encode([p.question for p in fresh])))
    scored = []
    for probe in probes:
        hit = cached.get((probe.section_key, probe.question))
        scored.append(
            hit or score_probe(searcher, probe, by_key[probe.section_key], vectors[probe.question], stats, k, per_doc)
        )
    return fit(version, scored, rescored=len(fresh), seconds=time.perf_counter() - started)


class IndexCalibrator:
    """Called by `KnowledgeIndex.refresh` after each write (knowledge/ only sees its Protocol).
    Returns the calibration's summary for the refresh report, or None when there was too little to go on."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __call__(self, index: KnowledgeIndex, version: int) -> dict[str, Any] | None:
        from bot.engine.pipeline import load_term_stats
        from knowledge.search import Searcher

        searcher = Searcher.from_settings(self.settings, index)
        stats = await asyncio.to_thread(load_term_stats, index)
        previous = await asyncio.to_thread(latest, index.sidecar, version)
        calibration = await asyncio.to_thread(
            calibrate_sync,
            index,
            searcher,
            stats,
            version=version,
            previous=previous,
            k=self.settings.answer_k,
            per_doc=self.settings.answer_chunks_per_doc,
        )
        if calibration is None:
            return None
        await asyncio.to_thread(save, index.sidecar, calibration)
        return calibration.summary()


def calibrator_for(settings: Settings) -> IndexCalibrator | None:
    """The `after_write` hook every refresh path passes (CLI, Slack, schedule, evals, benchmarks)."""
    return IndexCalibrator(settings) if settings.self_calibration else None


async def ensure_calibrated(index: KnowledgeIndex, settings: Settings) -> dict[str, Any] | None:
    """The calibration of the version being served, made now if it is missing (an index built
    before calibration existed, or with it switched off); its summary, or None."""
    version = await asyncio.to_thread(index.serving_version)
    found = await asyncio.to_thread(load, index.sidecar, version)
    if found is not None and found.probes_version == PROBES_VERSION:
        return found.summary()
    calibrator = calibrator_for(settings)
    return await calibrator(index, version) if calibrator is not None else None


def index_status(index: KnowledgeIndex) -> dict[str, Any]:
    """The index's stats plus the calibration in force (`status`, `/kb-status`)."""
    stats = index.stats()
    if stats.get("exists"):
        found = load(index.sidecar, index.serving_version())
        stats["calibration"] = found.summary() if found is not None else None
    return stats


async def refresh_calibrated(
    index: KnowledgeIndex,
    specs: Sequence[str | SourceSpec],
    settings: Settings,
    *,
    show_progress: bool | None = None,
) -> RefreshReport:
    """Every refresh path's one call: refresh, calibrate the new version, and calibrate the served
    version if it never was (an index from before calibration, or probes of an older release),
    even when the refresh itself changed nothing."""
    report = await index.refresh(specs, show_progress=show_progress, after_write=calibrator_for(settings))
    if report.calibration is None and settings.self_calibration and await asyncio.to_thread(index.exists):
        report.calibration = await ensure_calibrated(index, settings)
    return report
