"""GitHub REST API emulator: git trees, blobs and commits of repositories, with the rate-limit headers.

From the public reference (docs.github.com, REST > Git database > Trees/Blobs, and "Rate limits
for the REST API"):
- `Authorization: Bearer TOKEN` (or `token TOKEN`); a bad token gets 401 `Bad credentials`.
  Without a token only public repositories are readable; a private one answers 404 `Not Found`.
- `GET /repos/{owner}/{repo}/git/trees/{tree_sha_or_ref}?recursive=1` lists every entry with
  `path`, `mode`, `type` (blob|tree), `sha`, `size`; `truncated` past the entry limit.
- `GET /repos/{owner}/{repo}/git/blobs/{sha}` gives `content` base64-encoded (wrapped at 60 chars).
- `GET /repos/{owner}/{repo}/commits` (REST > Commits > List commits) lists commits newest first,
  reachable from `sha` (a branch name or commit SHA; default the default branch; an unknown one is
  404 `No commit found for SHA: ...`), only those touching `path` when given; `since`/`until` ISO
  8601; `per_page` (default 30, at most 100) and `page` (default 1), with a `Link` header giving
  `next`/`last` (and `prev`/`first`) pages. Each commit has `sha`, `commit.author/committer.date`,
  `commit.message`, `commit.tree.sha`, `parents`. An empty repository answers 409.
- Every response carries `x-ratelimit-limit/remaining/used/reset/resource`; with the quota spent a
  request gets 403 with `x-ratelimit-remaining: 0`. Secondary limits answer 429 with Retry-After
  (scripted here with `fail`).
Blob and tree SHAs are real git object ids, so unchanged content keeps its SHA.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.emulators.rest_base import RestEmulator, json_response

WHO = web.RequestKey("who", object)  # who made the request, set by authenticate
MAX_TREE_ENTRIES = 100_000
DEFAULT_PER_PAGE, MAX_PER_PAGE = 30, 100


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_sha(kind: str, data: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()


class GitHubEmulator(RestEmulator):
    def __init__(self, *, limit_authenticated: int = 5000, limit_anonymous: int = 60, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokens: set[str] = set()
        # (owner, repo) -> {"private", "default", "refs": {ref: {path: blob sha}}, "history": {ref: [commit, ...]}}
        self.repos: dict[tuple[str, str], dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.limits = {"token": limit_authenticated, "anonymous": limit_anonymous}
        self.used: dict[str, int] = {}
        self.reset_at = int(time.time()) + 3600

    # --- content ---------------------------------------------------------------------------
    def add_repo(self, owner: str, repo: str, *, private: bool = True, ref: str = "main") -> None:
        self.repos[(owner, repo)] = {"private": private, "default": ref, "refs": {ref: {}}, "history": {ref: []}}

    def put_file(
        self, owner: str, repo: str, path: str, content: str, ref: str = "main", *, at: datetime | None = None
    ) -> str:
        """Commit `content` at `path` on `ref` (committed now unless `at` says when); the blob SHA."""
        data = content.encode("utf-8")
        sha = git_sha("blob", data)
        self.blobs[sha] = data
        self.repos[(owner, repo)]["refs"][ref][path] = sha
        self.commit(owner, repo, ref, path, f"Update {path}", at)
        return sha

    def delete_file(self, owner: str, repo: str, path: str, ref: str = "main") -> None:
        del self.repos[(owner, repo)]["refs"][ref][path]
        self.commit(owner, repo, ref, path, f"Delete {path}", None)

    def commit(self, owner: str, repo: str, ref: str, path: str, message: str, at: datetime | None) -> None:
        """One commit touching `path` on top of `ref`: its tree is the ref's files as they are now."""
        history = self.repos[(owner, repo)]["history"][ref]
        root, _ = self.tree_entries(self.repos[(owner, repo)]["refs"][ref])
        when = iso(at or datetime.now(timezone.utc))
        parents = [history[0]["sha"]] if history else []
        lines = [f"tree {root}", *(f"parent {parent}" for parent in parents), f"committer {when} {len(history)}"]
        sha = git_sha("commit", ("\n".join(lines) + "\n\n" + message).encode())
        history.insert(
            0, {"sha": sha, "date": when, "message": message, "path": path, "tree": root, "parents": parents}
        )

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
        app.router.add_get("/repos/{owner}/{repo}/commits", self.list_commits)

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

    def reachable(self, repo: dict[str, Any], start: str) -> list[dict[str, Any]]:
        """Commits reachable from a branch name or a commit SHA (full or abbreviated), newest first."""
        if start in repo["history"]:
            return list(repo["history"][start])
        for history in repo["history"].values():
            for position, commit in enumerate(history):
                if len(start) >= 7 and commit["sha"].startswith(start.lower()):
                    return history[position:]
        raise web.HTTPNotFound()  # GitHub: "No commit found for SHA: ..."

    async def list_commits(self, request: web.Request) -> web.Response:
        repo = self.repository(request)
        query = request.query
        if not any(repo["history"].values()):
            return json_response({**self.error_body(409), "message": "Git Repository is empty."}, 409)
        history = self.reachable(repo, query.get("sha") or repo["default"])
        path = query.get("path", "").strip("/")
        if path:
            history = [c for c in history if c["path"] == path or c["path"].startswith(path + "/")]
        for name, keep in (("since", lambda c, t: c["date"] >= t), ("until", lambda c, t: c["date"] <= t)):
            if name in query:
                try:
                    bound = iso(datetime.fromisoformat(query[name].replace("Z", "+00:00")))
                except ValueError:
                    return json_response({**self.error_body(422), "message": f"Invalid value for {name}"}, 422)
                history = [c for c in history if keep(c, bound)]
        try:
            per_page = min(MAX_PER_PAGE, max(1, int(query.get("per_page", DEFAULT_PER_PAGE))))
            page = max(1, int(query.get("page", 1)))
        except ValueError:
            per_page, page = DEFAULT_PER_PAGE, 1  # GitHub ignores a non-numeric page or size
        last = max(1, -(-len(history) // per_page))
        items = history[(page - 1) * per_page : page * per_page]
        response = json_response([self.commit_json(request, c) for c in items])
        links = {"next": page + 1, "last": last} if page < last else {}
        if page > 1:
            links = {"prev": page - 1, "first": 1, **links}
        if links:
            params = {k: v for k, v in query.items() if k not in ("page", "per_page")}
            response.headers["Link"] = ", ".join(
                f'<{self.base_url}{request.path}?{urlencode({**params, "per_page": per_page, "page": n})}>; rel="{rel}"'
                for rel, n in links.items()
            )
        return response

    def commit_json(self, request: web.Request, commit: dict[str, Any]) -> dict[str, Any]:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        person = {"name": "Docs Bot", "email": "docs@acme.test", "date": commit["date"]}
        api = f"{self.base_url}/repos/{owner}/{repo}"
        return {
            "sha": commit["sha"],
            "node_id": f"C_{commit['sha'][:12]}",
            "commit": {
                "author": person,
                "committer": person,
                "message": commit["message"],
                "tree": {"sha": commit["tree"], "url": f"{api}/git/trees/{commit['tree']}"},
                "url": f"{api}/git/commits/{commit['sha']}",
                "comment_count": 0,
            },
            "url": f"{api}/commits/{commit['sha']}",
            "html_url": f"https://github.com/{owner}/{repo}/commit/{commit['sha']}",
            "parents": [{"sha": p, "url": f"{api}/commits/{p}"} for p in commit["parents"]],
        }
