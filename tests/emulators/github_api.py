"""GitHub REST API emulator: git trees and blobs of repositories, with the rate-limit headers.

From the public reference (docs.github.com, REST > Git database > Trees/Blobs, and "Rate limits
for the REST API"):
- `Authorization: Bearer TOKEN` (or `token TOKEN`); a bad token gets 401 `Bad credentials`.
  Without a token only public repositories are readable; a private one answers 404 `Not Found`.
- `GET /repos/{owner}/{repo}/git/trees/{tree_sha_or_ref}?recursive=1` lists every entry with
  `path`, `mode`, `type` (blob|tree), `sha`, `size`; `truncated` past the entry limit.
- `GET /repos/{owner}/{repo}/git/blobs/{sha}` gives `content` base64-encoded (wrapped at 60 chars).
- Every response carries `x-ratelimit-limit/remaining/used/reset/resource`; with the quota spent a
  request gets 403 with `x-ratelimit-remaining: 0`. Secondary limits answer 429 with Retry-After
  (scripted here with `fail`).
Blob and tree SHAs are real git object ids, so unchanged content keeps its SHA.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from aiohttp import web

from tests.emulators.rest_base import RestEmulator, json_response

WHO = web.RequestKey("who", object)  # who made the request, set by authenticate
MAX_TREE_ENTRIES = 100_000


def git_sha(kind: str, data: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()


class GitHubEmulator(RestEmulator):
    def __init__(self, *, limit_authenticated: int = 5000, limit_anonymous: int = 60, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokens: set[str] = set()
        self.repos: dict[tuple[str, str], dict[str, Any]] = {}  # (owner, repo) -> {"private", "refs"}
        self.blobs: dict[str, bytes] = {}
        self.limits = {"token": limit_authenticated, "anonymous": limit_anonymous}
        self.used: dict[str, int] = {}
        self.reset_at = int(time.time()) + 3600

    # --- content ---------------------------------------------------------------------------
    def add_repo(self, owner: str, repo: str, *, private: bool = True, ref: str = "main") -> None:
        self.repos[(owner, repo)] = {"private": private, "refs": {ref: {}}}

    def put_file(self, owner: str, repo: str, path: str, content: str, ref: str = "main") -> str:
        data = content.encode("utf-8")
        sha = git_sha("blob", data)
        self.blobs[sha] = data
        self.repos[(owner, repo)]["refs"][ref][path] = sha
        return sha

    def delete_file(self, owner: str, repo: str, path: str, ref: str = "main") -> None:
        del self.repos[(owner, repo)]["refs"][ref][path]

    def tree_entries(self, files: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
        """The root tree SHA and every entry (directories as trees), as git would compute them."""
        entries: dict[str, dict[str, Any]] = {}

        def tree_sha(prefix: str) -> str:
            children: list[tuple[str, str, str]] = []  # (name, mode, sha)
            names = {path[len(prefix) :].split("/", 1)[0] for path in files if path.startswith(prefix)}
            for name in sorted(names):
                full = prefix + name
                if full in files:
                    children.append((name, "100644", files[full]))
                    entries[full] = {
                        "path": full,
                        "mode": "100644",
                        "type": "blob",
                        "sha": files[full],
                        "size": len(self.blobs[files[full]]),
                    }
                else:
                    sha = tree_sha(full + "/")
                    children.append((name, "40000", sha))
                    entries[full] = {"path": full, "mode": "040000", "type": "tree", "sha": sha}
            payload = b"".join(f"{mode} {name}\0".encode() + bytes.fromhex(sha) for name, mode, sha in children)
            return git_sha("tree", payload)

        root = tree_sha("")
        return root, [entries[path] for path in sorted(entries)]

    # --- protocol --------------------------------------------------------------------------
    def error_body(self, status: int) -> dict[str, Any]:
        messages = {
            401: "Bad credentials",
            403: "Forbidden",
            404: "Not Found",
            429: "You have exceeded a secondary rate limit",
        }
        return {
            "message": messages.get(status, f"HTTP {status}"),
            "documentation_url": "https://docs.github.com/rest",
            "status": str(status),
        }

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/repos/{owner}/{repo}/git/trees/{ref:.+}", self.tree)
        app.router.add_get("/repos/{owner}/{repo}/git/blobs/{sha}", self.blob)

    def caller(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not scheme:
            return "anonymous"
        if scheme.lower() in ("bearer", "token") and token in self.tokens:
            return "token"
        return None

    def authenticate(self, request: web.Request) -> web.Response | None:
        who = self.caller(request)
        if who is None:
            return json_response(self.error_body(401), 401)
        request[WHO] = who
        if time.time() >= self.reset_at:  # a new rate-limit window
            self.used.clear()
            self.reset_at = int(time.time()) + 3600
        self.used[who] = self.used.get(who, 0) + 1
        if self.used[who] > self.limits[who]:
            body = {
                "message": "API rate limit exceeded",
                "documentation_url": "https://docs.github.com/rest/rate-limit",
            }
            return json_response(body, 403)
        return None

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        who = request.get(WHO) or "anonymous"
        used = min(self.used.get(who, 0), self.limits[who])
        response.headers["x-ratelimit-limit"] = str(self.limits[who])
        response.headers["x-ratelimit-remaining"] = str(self.limits[who] - used)
        response.headers["x-ratelimit-used"] = str(used)
        response.headers["x-ratelimit-reset"] = str(self.reset_at)
        response.headers["x-ratelimit-resource"] = "core"

    def repository(self, request: web.Request) -> dict[str, Any]:
        repo = self.repos.get((request.match_info["owner"], request.match_info["repo"]))
        if repo is None or (repo["private"] and request[WHO] != "token"):
            raise web.HTTPNotFound()  # GitHub hides private repositories behind 404
        return repo

    async def tree(self, request: web.Request) -> web.Response:
        repo = self.repository(request)
        ref = request.match_info["ref"]
        files = repo["refs"].get(ref)
        if files is None:
            raise web.HTTPNotFound()
        root, entries = self.tree_entries(files)
        if "recursive" not in request.query:
            entries = [entry for entry in entries if "/" not in entry["path"]]
        truncated = len(entries) > MAX_TREE_ENTRIES
        return json_response(
            {
                "sha": root,
                "url": f"{self.base_url}{request.path}",
                "tree": entries[:MAX_TREE_ENTRIES],
                "truncated": truncated,
            }
        )

    async def blob(self, request: web.Request) -> web.Response:
        self.repository(request)
        sha = request.match_info["sha"]
        data = self.blobs.get(sha)
        if data is None:
            raise web.HTTPNotFound()
        encoded = base64.b64encode(data).decode()
        wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n"
        return json_response(
            {
                "sha": sha,
                "node_id": f"B_{sha[:12]}",
                "size": len(data),
                "url": f"{self.base_url}{request.path}",
                "content": wrapped,
                "encoding": "base64",
            }
        )
