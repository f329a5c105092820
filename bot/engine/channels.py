"""Per-channel knowledge: which sources a channel's answers may come from, and its own answer and
escalation lines (confidence below `caveat_threshold` escalates). Read from the `channels:`
section of `supportbot-sources.yml`:

    channels:
      C0BILLING:                 # a Slack channel id
        sources: [billing-docs]  # names (or URIs) of entries under `sources:`
        answer_threshold: 0.7    # optional: stricter or looser than SUPPORTBOT_ANSWER_THRESHOLD
        caveat_threshold: 0.45   # optional: below it the question escalates (SUPPORTBOT_CAVEAT_THRESHOLD)

A channel that is not listed uses every source and the global settings. The restriction is a
filter on retrieval, so an answer can never cite a source its channel may not use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.connectors.catalog import load_catalog

KNOWN_KEYS = {"sources", "answer_threshold", "caveat_threshold"}


class ChannelConfigError(ValueError):
    """The `channels:` section is unusable; the message names the channel and the key."""


@dataclass(frozen=True)
class ChannelPolicy:
    sources: frozenset[str] | None = None  # source URIs; None: every source
    answer_threshold: float | None = None
    caveat_threshold: float | None = None


@dataclass(frozen=True)
class ChannelPolicies:
    by_channel: Mapping[str, ChannelPolicy] = field(default_factory=dict)

    def for_channel(self, channel: str | None) -> ChannelPolicy:
        return self.by_channel.get(channel or "", ChannelPolicy())


def threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ChannelConfigError(f"{where} must be a number between 0 and 1, not {value!r}")
    return float(value)


def parse_channel_policies(raw: Any, resolve: Callable[[str], str], known_uris: set[str]) -> ChannelPolicies:
    """`resolve` maps a source name to its URI; every channel's sources must be declared ones."""
    if raw is None:
        return ChannelPolicies()
    if not isinstance(raw, dict):
        raise ChannelConfigError("channels: expected a mapping of channel ids to settings")
    policies: dict[str, ChannelPolicy] = {}
    for channel, entry in raw.items():
        where = f"channels.{channel}"
        if not isinstance(entry, dict):
            raise ChannelConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - KNOWN_KEYS
        if unknown:
            raise ChannelConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(KNOWN_KEYS)})")
        sources = None
        if "sources" in entry:
            names = entry["sources"]
            if not isinstance(names, list):
                raise ChannelConfigError(f"{where}.sources: expected a list of source names")
            uris = {resolve(str(name)) for name in names}
            undeclared = sorted(uri for uri in uris if uri not in known_uris)
            if undeclared:
                raise ChannelConfigError(f"{where}.sources: not declared under sources: {undeclared}")
            sources = frozenset(uris)
        answer = (
            threshold(entry["answer_threshold"], f"{where}.answer_threshold") if "answer_threshold" in entry else None
        )
        caveat = (
            threshold(entry["caveat_threshold"], f"{where}.caveat_threshold") if "caveat_threshold" in entry else None
        )
        if answer is not None and caveat is not None and caveat > answer:
            raise ChannelConfigError(f"{where}: caveat_threshold must not be above answer_threshold")
        policies[str(channel)] = ChannelPolicy(sources, answer, caveat)
    return ChannelPolicies(policies)


def policies_from_file(path: Path) -> ChannelPolicies:
    """The `channels:` of a sources file; none when the file does not exist."""
    if not Path(path).is_file():
        return ChannelPolicies()
    catalog = load_catalog(Path(path))
    return parse_channel_policies(catalog.raw.get("channels"), catalog.index_key, catalog.index_keys)
