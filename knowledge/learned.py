"""Learned answers: what a human answered on an escalation, reviewed, and kept as knowledge.

Each entry is one JSON file in `DATA_DIR/learned/entries/` (written atomically: a crash never
leaves half an entry), moving draft -> approved | declined (-> deleted). An approved entry is
also written as a Markdown page in `DATA_DIR/learned/kb/`, which is an ordinary folder source:
refresh indexes it like any help center page (incrementally, calibrated, gated), so a learned
answer is searched, cited and refreshed the same way. Its document id starts with `learned/`
(that is how the eval report counts answers drawn from learned entries), its url is the Slack
thread it came from, and its title says who answered and when ("Answered by @x on DATE"), so
every citation of it does too. Deleting an entry removes its page; the next refresh drops it.

A draft whose question is close to an approved entry's (embedding cosine at or above
`SIMILAR_AT`) is offered as an update of that entry instead of a duplicate: approving it
rewrites the entry's page under the same document id.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from knowledge.connectors.registry import SourceSpec

Status = Literal["draft", "approved", "declined", "deleted"]
STATUSES: tuple[str, ...] = ("draft", "approved", "declined", "deleted")
DOC_PREFIX = "learned/"
SIMILAR_AT = 0.85  # cosine of two questions above which a draft updates an entry instead of adding one


class EntryNotFound(KeyError):
    """No learned entry with that id."""


@dataclass
class LearnedEntry:
    id: str
    title: str  # the question as asked
    answer: str  # the human answer (Markdown)
    thread_link: str | None  # where it was answered in Slack
    answered_by: str  # Slack user id
    answered_by_name: str  # for the citation: "Answered by @name"
    answered_at: str  # ISO date-time (UTC)
    interaction_id: str | None = None
    status: str = "draft"
    updates: str | None = None  # id of the approved entry this draft would replace
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_post: dict[str, str] = field(default_factory=dict)  # {"channel", "ts"} of the review message

    @property
    def doc_id(self) -> str:
        return f"{DOC_PREFIX}{self.id}"

    @property
    def citation(self) -> str:
        return f"Answered by @{self.answered_by_name} on {self.answered_at[:10]}"


def new_entry_id() -> str:
    return uuid.uuid4().hex[:12]


def utc_iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds")


def is_learned(doc_id: str | None) -> bool:
    return bool(doc_id) and str(doc_id).startswith(DOC_PREFIX)


def page_markdown(entry: LearnedEntry) -> str:
    """The entry as a Markdown page for the folder loader (front matter: id, title, url)."""
    meta = {
        "id": entry.doc_id,
        "title": f"{entry.title.strip()} ({entry.citation})",
        "url": entry.thread_link or "",
        "answered_by": entry.answered_by,
        "answered_at": entry.answered_at,
    }
    lines = ["---", *(f"{key}: {json.dumps(value)}" for key, value in meta.items() if value), "---", ""]
    return "\n".join([*lines, f"# {entry.title.strip()}", "", entry.answer.strip(), ""])


def cosine_rows(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Cosine of one vector against each row (the embedder normalises, but be safe)."""
    if not len(matrix):
        return np.zeros(0, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
    return np.asarray(matrix @ query / np.where(norms == 0, 1.0, norms))


def closest(
    query: np.ndarray, entries: Sequence[LearnedEntry], vectors: np.ndarray
) -> tuple[LearnedEntry, float] | None:
    """The entry whose question is most similar, if it is at least `SIMILAR_AT` (pure)."""
    scores = cosine_rows(query, vectors)
    if not len(scores):
        return None
    best = int(np.argmax(scores))
    return (entries[best], float(scores[best])) if scores[best] >= SIMILAR_AT else None


def with_learned(specs: Sequence[str | SourceSpec], data_dir: Path) -> list[str | SourceSpec]:
    """A refresh's sources plus the learned answers (once approved ones exist): every refresh keeps them."""
    store = LearnedStore(data_dir)
    out = list(specs)
    if store.has_source() and store.source not in out:
        out.append(store.source)
    return out


_REVIEWS = threading.Lock()  # reviews run in worker threads; one entry change at a time


class LearnedStore:
    """The entries of one data directory (file I/O only; callers run it off the event loop)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "learned"
        self.entries_dir = self.root / "entries"
        self.kb_dir = self.root / "kb"

    @property
    def source(self) -> str:
        """The folder source refresh indexes (it exists once anything was approved)."""
        return str(self.kb_dir)

    def has_source(self) -> bool:
        return self.kb_dir.is_dir()

    def _write(self, path: Path, text: str) -> None:
        """Atomic: a temporary file of its own (two writers never share one), then a rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def save(self, entry: LearnedEntry) -> LearnedEntry:
        if entry.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {entry.status!r}")
        self._write(self.entries_dir / f"{entry.id}.json", json.dumps(asdict(entry), ensure_ascii=False, indent=1))
        return entry

    def get(self, entry_id: str) -> LearnedEntry:
        if not entry_id.isalnum():
            raise EntryNotFound(entry_id)
        try:
            data = json.loads((self.entries_dir / f"{entry_id}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EntryNotFound(entry_id) from None
        return LearnedEntry(**data)

    def all(self, status: str | None = None) -> list[LearnedEntry]:
        if not self.entries_dir.is_dir():
            return []
        entries = []
        for path in sorted(self.entries_dir.glob("*.json")):
            try:
                entry = LearnedEntry(**json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue  # a damaged file must not hide the others
            if status is None or entry.status == status:
                entries.append(entry)
        return sorted(entries, key=lambda entry: entry.answered_at)

    def page_path(self, entry: LearnedEntry) -> Path:
        return self.kb_dir / f"{entry.id}.md"

    def approve(
        self, entry_id: str, reviewer: str, *, title: str | None = None, answer: str | None = None
    ) -> LearnedEntry:
        """Publish a draft (edited, if given): as its own page, or over the entry it updates."""
        with _REVIEWS:  # two clicks on one draft: read-modify-write one at a time
            return self._approve(entry_id, reviewer, title=title, answer=answer)

    def _approve(self, entry_id: str, reviewer: str, *, title: str | None, answer: str | None) -> LearnedEntry:
        draft = self.get(entry_id)
        if draft.status not in ("draft", "approved"):
            raise ValueError(f"entry {entry_id} is {draft.status}; only a draft can be approved")
        now = utc_iso()
        edited = replace(draft, title=title or draft.title, answer=answer or draft.answer)
        if draft.updates:
            target = self.get(draft.updates)
            published = replace(
                target,
                title=edited.title,
                answer=edited.answer,
                thread_link=edited.thread_link,
                answered_by=edited.answered_by,
                answered_by_name=edited.answered_by_name,
                answered_at=edited.answered_at,
                status="approved",
                reviewed_by=reviewer,
                reviewed_at=now,
            )
            self.save(published)
            self.save(replace(edited, status="approved", reviewed_by=reviewer, reviewed_at=now))
        else:
            published = self.save(replace(edited, status="approved", reviewed_by=reviewer, reviewed_at=now))
        self._write(self.page_path(published), page_markdown(published))
        return published

    def set_review_post(self, entry_id: str, post: dict[str, str]) -> LearnedEntry:
        """Remember where the draft was posted, on the entry as stored now: a review click may
        already have approved it, and that must not be written back to "draft"."""
        with _REVIEWS:
            return self.save(replace(self.get(entry_id), review_post=post))

    def decline(self, entry_id: str, reviewer: str) -> LearnedEntry:
        with _REVIEWS:
            entry = self.get(entry_id)
            if entry.status != "draft":
                raise ValueError(f"entry {entry_id} is {entry.status}; only a draft can be declined")
            return self.save(replace(entry, status="declined", reviewed_by=reviewer, reviewed_at=utc_iso()))

    def delete(self, entry_id: str) -> LearnedEntry:
        """Take an approved entry out of the knowledge (its page goes; the next refresh drops it)."""
        entry = self.get(entry_id)
        self.page_path(entry).unlink(missing_ok=True)
        self.kb_dir.mkdir(parents=True, exist_ok=True)  # an empty folder is still a complete source
        return self.save(replace(entry, status="deleted", reviewed_at=utc_iso()))

    def answered_interactions(self) -> set[str]:
        """Interactions whose escalation already has an approved learned answer."""
        return {entry.interaction_id for entry in self.all("approved") if entry.interaction_id}
