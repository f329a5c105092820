"""Connector cursors, one JSON file next to the index, written only after the index committed.

Kept beside the index (not in it) so a cursor never runs ahead of the documents it describes: a
sync that dies before the commit leaves the old cursor, and the next sync simply asks again.
A rollback forgets every cursor; the next sync re-lists each source and only what differs from
the restored index is embedded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_NAME = "connector-state.json"


def read_states(index_dir: Path) -> dict[str, dict[str, Any]]:
    path = Path(index_dir) / STATE_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # a lost cursor costs one full listing, never a wrong deletion
    return data if isinstance(data, dict) else {}


def write_states(index_dir: Path, states: dict[str, dict[str, Any]]) -> None:
    """Atomic replace with fsync: a crash leaves the old file or the new one, never half of it."""
    path = Path(index_dir) / STATE_NAME
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(states, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def forget_states(index_dir: Path) -> None:
    (Path(index_dir) / STATE_NAME).unlink(missing_ok=True)
