"""One HTTP client for every connector: retries for 429 (Retry-After) and 5xx, and errors an admin can act on.

A connector never decides on its own what a failed request means for the index: anything that
stops it listing the whole source raises `SourceError`, and the index then keeps every document
of that source (it never deletes on error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

USER_AGENT = "supportbot-sync/0.1"


class SourceError(RuntimeError):
    """The source could not be listed now (outage, bad config); its documents are kept."""


class SourceAuthError(SourceError):
    """The API refused the credentials (401) or their permissions (403): the message names the env vars."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # per request, the first try included
    backoff_seconds: float = 0.5  # doubled after each 5xx or network error
    max_wait_seconds: float = 60.0  # a longer Retry-After is cut to this (and still retried)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Retry-After as seconds or an HTTP date; GitHub's x-ratelimit-reset (epoch) when the quota is spent."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - (now or time.time()))
            except (TypeError, ValueError):
                return None
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - (now or time.time()))
        except ValueError:
            return None
    return None


def is_rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    """429 everywhere; GitHub also answers 403 when the primary or a secondary rate limit is hit."""
    if status == 429:
        return True
    return status == 403 and (headers.get("x-ratelimit-remaining") == "0" or "Retry-After" in headers)


class ApiClient:
    """An aiohttp session bound to one API base, counting the calls it makes (tests and the summary read it)."""

    def __init__(
        self,
        base_url: str,
        *,
        source: str,
        credential_hint: str,
        headers: Mapping[str, str] | None = None,
        auth: aiohttp.BasicAuth | None = None,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.credential_hint = credential_hint  # e.g. "ZENDESK_EMAIL and ZENDESK_API_TOKEN"
        self.policy = policy or RetryPolicy()
        self.calls = 0
        self.rate_limited = 0
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self._auth = auth
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(headers=self._headers, auth=self._auth, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path_or_url: str) -> str:
        return path_or_url if path_or_url.startswith(("http://", "https://")) else f"{self.base_url}{path_or_url}"

    async def get(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request("GET", path_or_url, params=params)

    async def post(self, path_or_url: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", path_or_url, body=body)

    async def request(
        self, method: str, path_or_url: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        """The decoded JSON body of a 2xx answer; waits out 429s and retries 5xx and network errors."""
        assert self._session is not None, "use `async with ApiClient(...)`"
        url = self.url(path_or_url)
        delay = self.policy.backoff_seconds
        last_problem = ""
        for _ in range(self.policy.attempts):
            self.calls += 1
            try:
                async with self._session.request(method, url, params=params, json=body) as response:
                    status, headers = response.status, response.headers
                    if 200 <= status < 300:
                        return await response.json(content_type=None)
                    text = (await response.text())[:300]
            except (TimeoutError, aiohttp.ClientError) as exc:
                last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if is_rate_limited(status, headers):
                self.rate_limited += 1
                wait = retry_after_seconds(headers)
                last_problem = f"HTTP {status} (rate limited)"
                await asyncio.sleep(min(self.policy.max_wait_seconds, delay if wait is None else wait))
                continue
            if status in (401, 403):
                what = "rejected the credentials" if status == 401 else "denied access with these credentials"
                raise SourceAuthError(
                    f"{self.source}: the API {what} (HTTP {status} on {method} {path_or_url.split('?')[0]}); "
                    f"check {self.credential_hint}"
                )
            if status >= 500:
                last_problem = f"HTTP {status}"
                await asyncio.sleep(delay)
                delay *= 2
                continue
            raise SourceError(f"{self.source}: HTTP {status} on {method} {path_or_url.split('?')[0]}: {text}")
        raise SourceError(f"{self.source}: gave up after {self.policy.attempts} attempts ({last_problem})")
