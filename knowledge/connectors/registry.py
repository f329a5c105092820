"""Which connector serves a source URI, and the options it gets from the environment or the YAML."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from knowledge.connectors.base import Connector, ConnectorOptions, FullListingConnector
from knowledge.connectors.confluence import ConfluenceConnector
from knowledge.connectors.github import GitHubConnector
from knowledge.connectors.notion import NotionConnector
from knowledge.connectors.zendesk import ZendeskConnector
from knowledge.sources import source_key

# URI prefix -> (connector class, env var that overrides the API base, e.g. http://127.0.0.1:PORT)
CONNECTORS: dict[str, tuple[type[Any], str]] = {
    "zendesk+": (ZendeskConnector, "ZENDESK_API_BASE"),
    "confluence+": (ConfluenceConnector, "CONFLUENCE_API_BASE"),
    "notion://": (NotionConnector, "NOTION_API_BASE"),
    "github://": (GitHubConnector, "GITHUB_API_URL"),
}


@dataclass(frozen=True)
class SourceSpec:
    """One declared source: a URI (or path) plus connector options and its sync interval."""

    uri: str
    options: Mapping[str, Any] = field(default_factory=dict)
    every_seconds: float | None = None  # None: only on explicit refreshes


def spec_uri(spec: str | SourceSpec) -> str:
    return spec.uri if isinstance(spec, SourceSpec) else spec


def is_connector_uri(uri: str) -> bool:
    return uri.startswith(tuple(CONNECTORS))


def index_key(uri: str) -> str:
    """The `source` column value of this source's chunks: a connector URI as written, a path absolute."""
    return uri if is_connector_uri(uri) else source_key(uri)


def connector_for(
    spec: str | SourceSpec,
    *,
    env: Mapping[str, str] | None = None,
    max_document_bytes: int = 2_000_000,
    timeout: float = 30.0,
    concurrency: int = 8,
) -> Connector:
    uri = spec_uri(spec)
    settings = dict(spec.options) if isinstance(spec, SourceSpec) else {}
    environment = os.environ if env is None else env
    for prefix, (cls, base_var) in CONNECTORS.items():
        if uri.startswith(prefix):
            api_base = settings.pop("api_base", None) or environment.get(base_var) or None
            options = ConnectorOptions(api_base, environment, max_document_bytes, timeout, concurrency, extra=settings)
            connector: Connector = cls(uri, options)
            return connector
    if "://" in uri and not uri.startswith(("http://", "https://", "file://")):
        raise ValueError(
            f"{uri}: unknown source scheme (expected a path, an http(s) URL or one of {', '.join(CONNECTORS)})"
        )
    return FullListingConnector(uri, ConnectorOptions(None, environment, max_document_bytes, timeout, concurrency))
