"""The connector interface and the change-key diff most connectors share.

A connector is asked for what changed since the state it returned last time (its cursor) and
answers with a `SourceLoad` marked `incremental`: the new or changed documents, the ids that were
deleted, archived or unpublished, and the state to persist once the index has committed them.
Loaders of folders and web pages fit the same interface with a full listing (`incremental=False`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from knowledge.connectors.http import ApiClient, RetryPolicy, SourceError
from knowledge.sources import (
    Document,
    DocumentError,
    LoadFailure,
    SourceLoad,
    check_document,
    is_url,
    load_source,
    source_key,
)

State = dict[str, Any]  # JSON-serialisable cursor of one source


@dataclass(frozen=True)
class ConnectorOptions:
    """What a source needs beyond its URI; from `supportbot-sources.yml` or the environment."""

    api_base: str | None = None  # e.g. http://127.0.0.1:PORT to talk to an emulator
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    max_document_bytes: int = 2_000_000
    timeout: float = 30.0
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    extra: Mapping[str, Any] = field(default_factory=dict)  # connector-specific keys from the YAML

    def client(
        self,
        default_base: str,
        source: str,
        credential_hint: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: aiohttp.BasicAuth | None = None,
    ) -> ApiClient:
        """An API client for this source: the overridden base (emulator, proxy) or the public one."""
        return ApiClient(
            self.api_base or default_base,
            source=source,
            credential_hint=credential_hint,
            headers=headers,
            auth=auth,
            timeout=self.timeout,
            policy=self.retry,
        )


class Connector(Protocol):
    """Lists what changed in one source since `state`; `known_ids` are the ids the index holds for it."""

    source: str  # the source key in the index: the URI as the user wrote it

    async def changes(self, state: State | None, known_ids: Collection[str]) -> SourceLoad: ...


class FullListingConnector:
    """The file and web loaders behind the same interface: no cursor, a full listing each time
    (`incremental=False`), so whatever is no longer listed is deleted by the index."""

    def __init__(self, uri: str, options: ConnectorOptions) -> None:
        self.source = source_key(uri) if not is_url(uri) else uri
        self.uri = uri
        self.options = options

    async def changes(self, state: State | None, known_ids: Collection[str]) -> SourceLoad:
        return await load_source(
            self.uri,
            max_bytes=self.options.max_document_bytes,
            timeout=self.options.timeout,
            concurrency=self.options.concurrency,
        )


def credential(env: Mapping[str, str], name: str, source: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SourceError(f"{source}: {name} is not set")
    return value


def changed_ids(old: Mapping[str, str], new: Mapping[str, str], known_ids: Collection[str]) -> list[str]:
    """Ids whose change key differs from the persisted one, or that the index lacks (after a rollback)."""
    known = set(known_ids)
    return [doc_id for doc_id, key in new.items() if old.get(doc_id) != key or doc_id not in known]


async def fetch_changed(
    load: SourceLoad,
    manifest: dict[str, str],
    ids: list[str],
    fetch: Callable[[str], Awaitable[Document | None]],
    concurrency: int,
    max_bytes: int,
) -> None:
    """Fetch the changed documents concurrently into `load`. A document that fails is reported and
    its change key blanked in `manifest`, so the next sync tries it again and the index keeps the old
    copy; `None` (nothing left to index, e.g. an empty page) deletes it."""
    limiter = asyncio.Semaphore(max(1, concurrency))

    async def one(doc_id: str) -> None:
        async with limiter:
            try:
                doc = await fetch(doc_id)
                if doc is None:
                    load.deleted_ids.add(doc_id)
                    return
                load.documents.append(check_document(doc, max_bytes))
            except DocumentError as exc:
                load.failures.append(LoadFailure(f"{load.source} {doc_id}", str(exc), doc_id=doc_id))
                manifest[doc_id] = ""

    await asyncio.gather(*(one(doc_id) for doc_id in ids))
    load.documents.sort(key=lambda doc: doc.doc_id)


def incremental_load(source: str) -> SourceLoad:
    return SourceLoad(source=source, incremental=True)


def finish(load: SourceLoad, client: ApiClient, state: State) -> SourceLoad:
    load.state = state
    load.api_calls = client.calls
    return load
