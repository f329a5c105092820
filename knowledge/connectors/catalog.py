"""`supportbot-sources.yml`: the declared sources, each with a name, a URI and its own sync interval.

    sources:
      - name: help-center
        uri: zendesk+https://acme.zendesk.com/hc/en-us
        every: 15m                      # s, m, h or d; omit to sync only on `supportbot refresh`
        allowed_user_segments: [360001] # any other key is passed to the connector
      - name: handbook
        uri: github://acme/handbook/docs@main
        every: 1h

The same file may hold a `channels:` section (per-channel knowledge), which the bot reads; this
module only reads `sources:` and reports every mistake with the entry it is in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from knowledge.connectors.registry import SourceSpec, index_key

INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_INTERVAL_SECONDS = 60.0  # faster polling only burns API quota
RESERVED = {"name", "uri", "every"}


class CatalogError(ValueError):
    """The sources file is unusable; the message names the file and the entry."""


@dataclass(frozen=True)
class Catalog:
    path: Path
    sources: dict[str, SourceSpec]  # name -> spec, in file order
    raw: dict[str, Any]  # the whole YAML mapping (the bot reads `channels:` from it)

    def index_key(self, name_or_uri: str) -> str:
        """The index's source key for a declared name (or a URI/path given directly)."""
        spec = self.sources.get(name_or_uri)
        return index_key(spec.uri if spec else name_or_uri)

    @property
    def index_keys(self) -> set[str]:
        return {index_key(spec.uri) for spec in self.sources.values()}


def parse_interval(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = INTERVAL.match(str(value))
        if not match:
            raise CatalogError(f"{where}: 'every' must look like 30m, 2h or 1d, not {value!r}")
        seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds < MIN_INTERVAL_SECONDS:
        raise CatalogError(f"{where}: 'every' is {seconds:g} s; the minimum is {MIN_INTERVAL_SECONDS:g} s")
    return seconds


def parse_catalog(data: Any, path: Path) -> Catalog:
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        raise CatalogError(f"{path}: expected a mapping with a 'sources:' list")
    sources: dict[str, SourceSpec] = {}
    for number, entry in enumerate(data["sources"], start=1):
        where = f"{path}: sources[{number}]"
        if not isinstance(entry, dict) or not str(entry.get("uri", "")).strip():
            raise CatalogError(f"{where}: each source needs a 'uri'")
        uri = str(entry["uri"]).strip()
        name = str(entry.get("name") or uri)
        if name in sources:
            raise CatalogError(f"{where}: the name {name!r} is used twice")
        every = parse_interval(entry["every"], where) if entry.get("every") is not None else None
        options = {key: value for key, value in entry.items() if key not in RESERVED}
        sources[name] = SourceSpec(uri=uri, options=options, every_seconds=every)
    return Catalog(path=path, sources=sources, raw=data)


def load_catalog(path: Path) -> Catalog:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML ({exc})") from exc
    return parse_catalog(data, Path(path))
