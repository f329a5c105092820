"""Markdown, MDX and reStructuredText docs under a path of a GitHub repository at a ref.

One recursive tree call lists every file with its blob SHA, the change key: an unchanged tree
costs that single call; a changed file is read through the blobs API by its SHA, so the content
always matches the listing even while someone pushes. A changed file's last-updated date is the
committer date of the last commit touching its path at the ref (one commits call, made only for
new or changed blobs, so an unchanged sync still costs one call); a date in its front matter wins.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from knowledge.connectors.base import (
    ConnectorOptions,
    State,
    changed_ids,
    fetch_changed,
    finish,
    incremental_load,
)
from knowledge.connectors.http import SourceError
from knowledge.connectors.markup import docs_file_to_markdown
from knowledge.sources import Document, DocumentError, SourceLoad, decode_text, first_heading_or_line

SCHEME = "github://"
DOC_SUFFIXES = (".md", ".markdown", ".mdx", ".rst")
SKIPPED = {"readme.md", "license.md", "changelog.md"}
CREDENTIALS = "GITHUB_TOKEN (a token that can read the repository's contents)"
API_VERSION = "2022-11-28"


class GitHubConnector:
    def __init__(self, uri: str, options: ConnectorOptions) -> None:
        rest, _, ref = uri.removeprefix(SCHEME).partition("@")
        parts = [part for part in rest.split("/") if part]
        if not uri.startswith(SCHEME) or len(parts) < 2:
            raise ValueError(f"{uri}: expected github://OWNER/REPO[/PATH][@REF]")
        self.source = uri
        self.owner, self.repo = parts[0], parts[1]
        self.path = "/".join(parts[2:])
        self.ref = ref or "main"
        self.options = options
        self.web_base = str(options.extra.get("web_base", "https://github.com")).rstrip("/")

    def wanted(self, entry: dict[str, Any]) -> bool:
        path = str(entry.get("path", ""))
        inside = not self.path or path == self.path or path.startswith(self.path + "/")
        name = path.rsplit("/", 1)[-1].lower()
        return entry.get("type") == "blob" and inside and name.endswith(DOC_SUFFIXES) and name not in SKIPPED

    async def changes(self, state: State | None, known_ids: Collection[str]) -> SourceLoad:
        token = self.options.env.get("GITHUB_TOKEN", "").strip()
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        load = incremental_load(self.source)
        repo = f"/repos/{quote(self.owner)}/{quote(self.repo)}"
        async with self.options.client("https://api.github.com", self.source, CREDENTIALS, headers=headers) as client:
            try:
                tree = await client.get(f"{repo}/git/trees/{quote(self.ref, safe='')}", {"recursive": "1"})
            except SourceError as exc:
                if "HTTP 404" in str(exc):
                    hint = "" if token else "; a private repository needs GITHUB_TOKEN"
                    raise SourceError(f"{self.source}: repository or ref not found{hint}") from exc
                raise
            old = dict((state or {}).get("blobs", {}))
            if state and tree.get("sha") == state.get("tree") and set(known_ids) == set(old):
                return finish(load, client, dict(state))  # nothing moved: one call
            blobs = {str(e["path"]): str(e["sha"]) for e in tree.get("tree", []) if self.wanted(e)}

            async def fetch(path: str) -> Document | None:
                blob = await client.get(f"{repo}/git/blobs/{blobs[path]}")
                document = self.document(path, blob)
                if "updated_at" not in document.metadata:
                    commits = await client.get(f"{repo}/commits", {"path": path, "sha": self.ref, "per_page": "1"})
                    updated = last_commit_date(commits)
                    if updated:
                        document.metadata["updated_at"] = updated
                return document

            await fetch_changed(
                load,
                blobs,
                changed_ids(old, blobs, known_ids),
                fetch,
                self.options.concurrency,
                self.options.max_document_bytes,
            )
            if tree.get("truncated"):
                # Not every file was listed: nothing is deleted on a partial listing.
                load.warnings.append(f"{self.source}: the tree listing was truncated; deletions skipped this time")
            else:
                load.deleted_ids |= set(known_ids) - set(blobs)
            return finish(load, client, {"tree": tree.get("sha"), "blobs": blobs})

    def document(self, path: str, blob: dict[str, Any]) -> Document:
        if blob.get("encoding") != "base64":
            raise DocumentError(f"unexpected blob encoding {blob.get('encoding')!r}")
        try:
            data = base64.b64decode(str(blob.get("content", "")))
        except (binascii.Error, ValueError) as exc:
            raise DocumentError(f"blob content is not valid base64: {exc}") from exc
        warnings: list[str] = []
        meta, text = docs_file_to_markdown(path, decode_text(data, path, warnings))
        title = str(meta.pop("title", "") or first_heading_or_line(text))
        updated = meta.pop("updated_at", None) or meta.pop("last_updated", None) or meta.pop("date", None)
        url = f"{self.web_base}/{self.owner}/{self.repo}/blob/{quote(self.ref, safe='')}/{quote(path)}"
        metadata = {**{k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}, "sha": blob.get("sha")}
        if updated is not None:
            metadata["updated_at"] = str(updated)
        return Document(doc_id=path, title=title, url=url, text=text, source=self.source, metadata=metadata)


def last_commit_date(commits: Any) -> str | None:
    """The committer date of the newest commit in a List commits answer (the author date may be
    older: a rebased or cherry-picked change reaches the ref when it is committed)."""
    if not isinstance(commits, list) or not commits or not isinstance(commits[0], dict):
        return None
    commit = commits[0].get("commit") or {}
    date = (commit.get("committer") or {}).get("date") or (commit.get("author") or {}).get("date")
    return str(date) if date else None
