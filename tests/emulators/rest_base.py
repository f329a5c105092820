"""What the four knowledge-source emulators share: an aiohttp server on 127.0.0.1 that records
requests, injects scripted failures (429 with Retry-After, 5xx) at a chosen request, and asks the
subclass to authenticate before any route runs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class ScriptedFailure:
    status: int
    retry_after: float | None
    body: dict[str, Any]
    matches: Callable[[web.Request], bool]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json", headers=headers or {})


class RestEmulator:
    """Subclasses add routes in `routes` and implement `authenticate` (a response refuses the request)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.statuses: Counter[int] = Counter()
        self._scripted: list[ScriptedFailure] = []
        self._server: TestServer | None = None

    # --- scripting -------------------------------------------------------------------------
    def fail(
        self,
        status: int = 429,
        *,
        retry_after: float | None = 1,
        body: dict[str, Any] | None = None,
        when: Callable[[web.Request], bool] = lambda request: True,
    ) -> None:
        """The next request that `when` matches gets this error once (then requests pass again)."""
        self._scripted.append(ScriptedFailure(status, retry_after, body or self.error_body(status), when))

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": f"HTTP {status}"}

    def reset_counts(self) -> None:
        self.requests.clear()
        self.statuses.clear()

    # --- hooks -----------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def authenticate(self, request: web.Request) -> web.Response | None:
        raise NotImplementedError

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """Headers every response carries (rate-limit counters)."""

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        response: web.StreamResponse
        scripted = next((failure for failure in self._scripted if failure.matches(request)), None)
        if scripted is not None:
            self._scripted.remove(scripted)
            headers = {} if scripted.retry_after is None else {"Retry-After": f"{scripted.retry_after:g}"}
            response = json_response(scripted.body, scripted.status, headers)
        else:
            refused = self.authenticate(request)
            if refused is not None:
                response = refused
            else:
                try:
                    response = await handler(request)
                except web.HTTPException as exc:
                    response = json_response(self.error_body(exc.status), exc.status)
        self.decorate(request, response)
        self.statuses[response.status] += 1
        return response

    async def start(self) -> RestEmulator:
        app = web.Application(middlewares=[self._middleware])
        self.routes(app)
        self._server = TestServer(app, host=self.host, port=self.port or None)  # aiohttp's own local server
        await self._server.start_server()
        self.port = int(self._server.port or 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def __aenter__(self) -> RestEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
