"""Connector cursors, one JSON file beside the index (its sidecar), written only after the index committed.

Kept beside the index (not in it) so a cursor never runs ahead of the documents it describes: a
sync that dies before the commit leaves the old cursor, and the next sync simply asks again.
A rollback forgets every cursor; the next sync re-lists each source and only what differs from
the restored index is embedded.
"""

from __future__ import annotations

import json
from typing import Any

from knowledge.storage import Sidecar

STATE_NAME = "connector-state.json"


def read_states(sidecar: Sidecar) -> dict[str, dict[str, Any]]:
    try:
        text = sidecar.read_text(STATE_NAME)
        if text is None:
            return {}
        data = json.loads(text)
    except (OSError, json.JSONDecodeError):
        return {}  # a lost cursor costs one full listing, never a wrong deletion
    return data if isinstance(data, dict) else {}


def write_states(sidecar: Sidecar, states: dict[str, dict[str, Any]]) -> None:
    """Atomic replace: a crash leaves the old file or the new one, never half of it."""
    sidecar.write_text(STATE_NAME, json.dumps(states, sort_keys=True))


def forget_states(sidecar: Sidecar) -> None:
    sidecar.delete(STATE_NAME)
