"""Term statistics per index version, saved beside the index and carried forward by the change.

Counting the terms of every chunk reads all their text: minutes and gigabytes at a million chunks,
on every refresh and every bot start. So a version's statistics are worked out from the nearest
earlier version that has them: the documents whose hash differs between the two (a projected scan
of ids and hashes) lose their old chunks' terms and gain their new ones. The whole text is read
only for an index that has no saved statistics yet, or when most of it changed.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from bot.engine.terms import TermStats, term_set

if TYPE_CHECKING:
    from knowledge.index import KnowledgeIndex
    from knowledge.storage import Sidecar

log = logging.getLogger(__name__)

FOLDER = "terms"
TEXT_COLUMNS = ["title", "heading", "text"]
REBUILD_SHARE = 0.3  # more documents changed than this: counting afresh is as cheap and exact
KEEP_VERSIONS = 3  # saved statistics kept; older ones are only a slower starting point


def chunk_terms(row: dict[str, Any]) -> set[str]:
    return term_set(f"{row['title']}\n{row['heading']}\n{row['text']}")


def count_rows(rows: Any) -> tuple[Counter[str], int]:
    """Document frequencies and the number of chunks of a stream of (title, heading, text) batches."""
    df: Counter[str] = Counter()
    chunks = 0
    for batch in rows:
        for row in batch.to_pylist():
            df.update(chunk_terms(row))
            chunks += 1
    return df, chunks


def _name(version: int) -> str:
    return f"{FOLDER}/v{version}.json"


def _saved_versions(sidecar: Sidecar) -> list[int]:
    stems = [name.removesuffix(".json") for name in sidecar.names(FOLDER) if name.endswith(".json")]
    return sorted(int(stem[1:]) for stem in stems if stem.startswith("v") and stem[1:].isdigit())


def _read(sidecar: Sidecar, version: int) -> TermStats | None:
    try:
        data = json.loads(sidecar.read_text(_name(version)) or "")
        return TermStats({str(k): int(v) for k, v in data["df"].items()}, int(data["chunks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or torn: recounted


def _save(sidecar: Sidecar, version: int, stats: TermStats) -> None:
    """Beside the index, local or on an object store; the sidecar writes whole files atomically."""
    sidecar.write_text(_name(version), json.dumps({"chunks": stats.documents, "df": stats.df}))
    for old in _saved_versions(sidecar)[:-KEEP_VERSIONS]:
        sidecar.delete(_name(old))


def _carried_forward(index: KnowledgeIndex, start: int, stats: TermStats) -> TermStats | None:
    """`stats` of table version `start` brought to the current version, or None when that version is
    gone (cleaned up) or too much changed for an update to pay."""
    from knowledge.index import document_hashes, documents_condition, scan

    current = index.table.to_lance()
    try:
        old = current.checkout_version(start)
    except (OSError, ValueError, RuntimeError):
        return None
    before, after = document_hashes(old), document_hashes(current)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    if len(changed) > REBUILD_SHARE * max(1, len(after)):
        return None
    df = Counter(stats.df)
    chunks = stats.documents
    if changed:
        where = documents_condition(changed)
        removed, removed_chunks = count_rows(scan(old, TEXT_COLUMNS, where))
        added, added_chunks = count_rows(scan(current, TEXT_COLUMNS, where))
        df.subtract(removed)
        df.update(added)
        chunks += added_chunks - removed_chunks
    return TermStats({term: n for term, n in df.items() if n > 0}, chunks)


def term_stats(index: KnowledgeIndex) -> TermStats:
    """How many chunks of the index as it is now contain each term (see the module docstring)."""
    from knowledge.index import scan

    version = index.version
    found = _read(index.sidecar, version)
    if found is not None:
        return found
    stats = None
    for start in reversed([v for v in _saved_versions(index.sidecar) if v < version]):
        saved = _read(index.sidecar, start)
        stats = _carried_forward(index, start, saved) if saved is not None else None
        break  # only the nearest: an older start means more change, and a full count is then as quick
    if stats is None:
        df, chunks = count_rows(scan(index.table.to_lance(), TEXT_COLUMNS))
        stats = TermStats(dict(df), chunks)
    _save(index.sidecar, version, stats)
    return stats
