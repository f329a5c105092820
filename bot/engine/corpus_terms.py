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
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.engine.terms import TermStats, term_set

if TYPE_CHECKING:
    from knowledge.index import KnowledgeIndex

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


def _path(index_dir: Path, version: int) -> Path:
    return Path(index_dir) / FOLDER / f"v{version}.json"


def _saved_versions(index_dir: Path) -> list[int]:
    folder = Path(index_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(int(p.stem[1:]) for p in folder.glob("v*.json") if p.stem[1:].isdigit())


def _read(index_dir: Path, version: int) -> TermStats | None:
    try:
        data = json.loads(_path(index_dir, version).read_text(encoding="utf-8"))
        return TermStats({str(k): int(v) for k, v in data["df"].items()}, int(data["chunks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or torn: recounted


def _save(index_dir: Path, version: int, stats: TermStats) -> None:
    """Written to a temporary file and renamed, so a crash never leaves a torn file in place."""
    folder = Path(index_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        json.dump({"chunks": stats.documents, "df": stats.df}, handle)
    os.replace(handle.name, _path(index_dir, version))
    for old in _saved_versions(index_dir)[:-KEEP_VERSIONS]:
        _path(index_dir, old).unlink(missing_ok=True)


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
    found = _read(index.index_dir, version)
    if found is not None:
        return found
    stats = None
    for start in reversed([v for v in _saved_versions(index.index_dir) if v < version]):
        saved = _read(index.index_dir, start)
        stats = _carried_forward(index, start, saved) if saved is not None else None
        break  # only the nearest: an older start means more change, and a full count is then as quick
    if stats is None:
        df, chunks = count_rows(scan(index.table.to_lance(), TEXT_COLUMNS))
        stats = TermStats(dict(df), chunks)
    _save(index.index_dir, version, stats)
    return stats
