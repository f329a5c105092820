"""Local fake of the Anthropic Messages API that the real `anthropic` SDK talks to over HTTP.

Why: the bot's LLM paths (answers citing `search_result` blocks, streaming, prompt caching,
SDK retries on 429/529, timeouts) can be tested end to end, deterministically, offline.

    async with AnthropicEmulator() as emu:
        client = AsyncAnthropic(base_url=emu.base_url, api_key="test-key")
        emu.fail(status=429, retry_after_ms=10)   # first call is rate limited, the SDK retries
        msg = await client.messages.create(model="m", max_tokens=100, messages=[...])
        assert emu.calls == 2

Standalone, for benchmarks:  python -m tests.emulators.anthropic_api --port 8011 --ttft 1 --tps 80
(`GET /_emulator/stats` then reports call and status counts).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.engine.tokens import block_tokens, estimate_tokens

CANNOT_ANSWER_TEXT = "I can't find this in the provided sources."
ANSWER_INTRO = "According to the documentation, "
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {429: "Rate limit exceeded", 500: "Internal server error", 529: "Overloaded"}


@dataclass
class Reply:
    """One scripted answer. `text=None` keeps the default answer (search-result citations or
    `default_text`) but still applies `thinking`/`delay`; `delay=None` uses `default_delay`.

    The answer contract's verdict: `verdict="full"` ends the reply with a last text block
    `\n\n<verdict>full</verdict>`; `tail` appends any raw text instead (a malformed tag).
    `cite` shapes the default answer's citations: "source" (the cited block's text, as the API
    does), "invented" (a `cited_text` that is NOT in the source: must fail verification) or
    "none" (no citations). `delta_chars` streams text in pieces of that many characters, so a
    test can split the tag at every position (default: a few words a piece). `cut_after=n` cuts a
    streamed answer after n text deltas (`cut="drop"` drops the connection, `cut="error"` sends an
    `error` event), the fault a stream can meet midway."""

    text: str | None = None
    citations: list[dict] | None = None
    thinking: str | None = None
    delay: float | None = None
    stop_reason: str = "end_turn"
    verdict: str | None = None
    tail: str | None = None
    cite: str = "source"
    delta_chars: int | None = None
    cut_after: int | None = None  # streaming only: cut the stream after this many text deltas
    cut: str = "drop"  # how: "drop" the connection, or send an "error" event and end

    def __post_init__(self) -> None:
        if self.cut not in ("drop", "error"):
            raise ValueError(f"cut must be 'drop' or 'error', not {self.cut!r}")

    @property
    def ending(self) -> str:
        """The text appended after the answer: the verdict tag, or the raw `tail`."""
        if self.tail is not None:
            return self.tail
        return f"\n\n<verdict>{self.verdict}</verdict>" if self.verdict is not None else ""

    @classmethod
    def cannot_answer(cls) -> Reply:
        """What the model says when the sources don't cover the question."""
        return cls(text=CANNOT_ANSWER_TEXT)


@dataclass
class Failure:
    """One scripted error response in the real API's error shape; the headers drive SDK retries."""

    status: int = 529
    message: str | None = None
    error_type: str | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None  # sent as `x-should-retry`, which overrides the SDK's policy
    delay: float | None = None

    def response(self, request_id: str) -> web.Response:
        headers = {"request-id": request_id}
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
            headers["retry-after"] = str(max(1, round(self.retry_after_ms / 1000)))
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        error_type = self.error_type or ERROR_TYPES.get(self.status, "api_error")
        message = self.message or ERROR_MESSAGES.get(self.status, error_type)
        return error_response(self.status, error_type, message, request_id, headers)


@dataclass
class RecordedRequest:
    """What a client sent: headers are lower-cased, `body` is parsed JSON (None if unparsable)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    status: int | None = None

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


def error_response(status: int, error_type: str, message: str, request_id: str, headers=None) -> web.Response:
    """`{"type":"error","error":{...},"request_id":...}` plus the `request-id` header, like the API."""
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    return web.json_response(body, status=status, headers={"request-id": request_id, **(headers or {})})


def first_sentence(text: str) -> str:
    match = re.match(r"\s*(.+?[.!?])(?=\s|$)", text, re.S)
    return match.group(1) if match else text.strip()


def _blocks(content: Any) -> Iterator[dict]:
    """A message's content blocks, descending into `tool_result` content (search results live there too)."""
    if not isinstance(content, list):
        return
    for block in content:
        if isinstance(block, dict):
            yield block
            if block.get("type") == "tool_result":
                yield from _blocks(block.get("content"))


def last_user_search_results(body: dict) -> list[tuple[int, dict]]:
    """(search_result_index, block) for the last user message; the index counts every
    `search_result` block in the request in order, which is what citations refer to."""
    messages = body.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    found, counter = [], itertools.count()
    for i, message in enumerate(messages):
        for block in _blocks(message.get("content")):
            if block.get("type") == "search_result":
                index = next(counter)
                if i == last_user:
                    found.append((index, block))
    return found


def relevant_search_results(body: dict, count: int = 2) -> list[tuple[int, dict, int]]:
    """(search_result_index, block, text block index) for the `count` text blocks of search
    results anywhere in the request sharing most words (4+ letters, the result's title included)
    with the last user message's last text (the question): a stand-in for the model choosing what
    to cite, blind to where the layout put each result and to how many text blocks a result
    holds. Ties go to the earlier block."""
    messages = body.get("messages") or []
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    texts = [b.get("text", "") for b in _blocks(last_user.get("content")) if b.get("type") == "text"]
    if isinstance(last_user.get("content"), str):
        texts = [last_user["content"]]
    words = set(re.findall(r"[a-z]{4,}", (texts[-1] if texts else "").lower()))
    found, counter = [], itertools.count()
    for message in messages:
        for block in _blocks(message.get("content")):
            if block.get("type") == "search_result":
                index = next(counter)
                found += [(index, block, n) for n, _ in enumerate(block.get("content") or [])]

    def overlap(item: tuple[int, dict, int]) -> int:
        text = str(item[1]["content"][item[2]].get("text", "")) + " " + str(item[1].get("title"))
        return len(words & set(re.findall(r"[a-z]{4,}", text.lower())))

    return sorted(found, key=lambda item: (-overlap(item), item[0], item[2]))[:count]


INVENTED_CITATION = "This sentence was never in any source: refunds are possible for ten years."


def cited_answer(results: Sequence[tuple[int, dict] | tuple[int, dict, int]], cite: str = "source") -> list[dict]:
    """Intro text, then one block per (first two) search results holding the first sentence of
    its text block (the given one, else its first). `cite`: "source" cites that whole text block
    (as the API does), "invented" cites text that is not in the result, "none" cites nothing."""
    blocks: list[dict] = [{"type": "text", "text": ANSWER_INTRO}]
    chosen = results[:2]
    for n, (index, result, *at) in enumerate(chosen):
        texts = [c.get("text", "") for c in result.get("content") or [] if c.get("type") == "text"]
        start = at[0] if at else 0
        first_text = texts[start] if start < len(texts) else ""
        block = {"type": "text", "text": first_sentence(first_text) + (" " if n < len(chosen) - 1 else "")}
        if (result.get("citations") or {}).get("enabled") and cite != "none":
            block["citations"] = [
                {
                    "type": "search_result_location",
                    # the whole cited block, as the API documents (or, scripted, something it never said)
                    "cited_text": INVENTED_CITATION if cite == "invented" else first_text,
                    "source": result.get("source"),
                    "title": result.get("title"),
                    "search_result_index": index,
                    "start_block_index": start,
                    "end_block_index": start + 1,
                }
            ]
        blocks.append(block)
    return blocks


# Minimum cacheable prompt length per model family, from Anthropic's prompt-caching reference
# (docs.claude.com/en/docs/build-with-claude/prompt-caching, "Cache limitations"): a breakpoint whose
# prefix is shorter caches nothing, silently. Longest matching prefix wins; unknown models: 1,024.
MIN_CACHEABLE_TOKENS = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-opus-4-7": 4096,
    "claude-haiku-3": 2048,
    "claude-3-haiku": 2048,
    "claude-3-5-haiku": 2048,
    "claude-sonnet-4": 1024,
    "claude-opus-4": 1024,
    "claude-3-7-sonnet": 1024,
}
DEFAULT_MIN_CACHEABLE = 1024
MAX_BREAKPOINTS = 4  # more cache_control blocks in one request: 400
LOOKBACK_BLOCKS = 20  # a breakpoint also finds hits at up to ~20 earlier block boundaries
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def min_cacheable_tokens(model: str) -> int:
    matches = [name for name in MIN_CACHEABLE_TOKENS if model.startswith(name)]
    return MIN_CACHEABLE_TOKENS[max(matches, key=len)] if matches else DEFAULT_MIN_CACHEABLE


class CacheError(ValueError):
    """A request the real API refuses for its cache_control use (400 invalid_request_error)."""


@dataclass
class Breakpoint:
    index: int  # the piece it ends at
    tokens: int  # prompt tokens up to and including that piece
    ttl: float
    cacheable: bool  # the prefix reaches the model's minimum


class PromptCache:
    """Anthropic's prompt cache as the reference describes it: prefixes ending at `cache_control`
    breakpoints (tools, then system, then messages), matched exactly, cached only from the model's
    minimum length, kept for the TTL (5 minutes, or "1h") and refreshed each time they are read.
    Each breakpoint also finds a hit at any of the ~20 block boundaries before it. The clock is
    injectable (`clock=`), so a TTL test moves time instead of sleeping.

    Usage per request: `cache_read_input_tokens` = the longest cached prefix found,
    `cache_creation_input_tokens` = from there to the last cacheable breakpoint, `input_tokens` =
    the rest. `dead_breakpoints` counts breakpoints below the minimum (they cost nothing, do nothing)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[int, float, float]] = {}  # prefix hash -> (tokens, expires, ttl)
        self.dead_breakpoints = 0
        self.breakpoints = 0

    @staticmethod
    def pieces(body: dict) -> list[Any]:
        """The prompt in cache order: tools, then system, then each message's blocks."""
        system = body.get("system")
        out: list[Any] = list(body.get("tools") or [])
        out += [system] if isinstance(system, str) else list(system or [])
        for message in body.get("messages") or []:
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            out += [{"role": message.get("role"), **b} if isinstance(b, dict) else b for b in blocks]
        return out

    def plan(self, body: dict) -> tuple[list[str], list[int], list[Breakpoint]]:
        """(prefix hash per piece, cumulative tokens per piece, breakpoints); raises CacheError."""
        pieces = self.pieces(body)
        minimum = min_cacheable_tokens(str(body.get("model")))
        digest = hashlib.sha256(str(body.get("model")).encode())
        hashes, totals, breakpoints = [], [], []
        total = 0
        auto = body.get("cache_control")  # top-level: a breakpoint on the last block
        for i, piece in enumerate(pieces):
            marker = piece.get("cache_control") if isinstance(piece, dict) else None
            if marker is None and isinstance(auto, dict) and i == len(pieces) - 1:
                marker = auto
            clean = {k: v for k, v in piece.items() if k != "cache_control"} if isinstance(piece, dict) else piece
            digest.update(json.dumps(clean, sort_keys=True).encode())
            total += block_tokens(clean)
            hashes.append(digest.hexdigest())
            totals.append(total)
            if marker is not None:
                if not isinstance(marker, dict) or marker.get("type") != "ephemeral":
                    raise CacheError("cache_control: type must be 'ephemeral'")
                ttl = TTL_SECONDS.get(str(marker.get("ttl", "5m")))
                if ttl is None:
                    raise CacheError("cache_control.ttl: must be '5m' or '1h'")
                breakpoints.append(Breakpoint(i, total, ttl, total >= minimum))
        if len(breakpoints) > MAX_BREAKPOINTS:
            raise CacheError(
                f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(breakpoints)}."
            )
        return hashes, totals, breakpoints

    def usage(self, body: dict) -> dict[str, int]:
        hashes, totals, breakpoints = self.plan(body)
        now = self.clock()
        self.entries = {h: e for h, e in self.entries.items() if e[1] > now}
        read, hit = 0, None
        for point in breakpoints:
            for j in range(point.index, max(-1, point.index - LOOKBACK_BLOCKS), -1):
                entry = self.entries.get(hashes[j])
                if entry is not None:
                    if entry[0] > read:
                        read, hit = entry[0], hashes[j]
                    break
        if hit is not None:  # a read refreshes the entry's lifetime
            tokens, _, ttl = self.entries[hit]
            self.entries[hit] = (tokens, now + ttl, ttl)
        written = read
        self.breakpoints += len(breakpoints)
        for point in breakpoints:
            if not point.cacheable:
                self.dead_breakpoints += 1
                continue
            self.entries[hashes[point.index]] = (point.tokens, now + point.ttl, point.ttl)
            written = max(written, point.tokens)
        total = totals[-1] if totals else 0
        return {
            "input_tokens": total - written,
            "cache_creation_input_tokens": written - read,
            "cache_read_input_tokens": read,
        }


def _delta(index: int, kind: str, key: str, value: Any) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, key: value}}


def stream_events(message: dict, delta_chars: int | None = None) -> Iterator[dict]:
    """The SSE event sequence the API sends for `message`, block by block (text deltas of
    `delta_chars` characters when given, else a few words each)."""
    usage = message["usage"]
    yield {
        "type": "message_start",
        "message": {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}},
    }
    yield {"type": "ping"}
    for i, block in enumerate(message["content"]):
        if block["type"] == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            yield {"type": "content_block_start", "index": i, "content_block": start}
            yield from (_delta(i, "thinking_delta", "thinking", p) for p in text_pieces(block["thinking"]))
            yield _delta(i, "signature_delta", "signature", block["signature"])
        else:
            start = {"type": "text", "text": "", **({"citations": []} if "citations" in block else {})}
            yield {"type": "content_block_start", "index": i, "content_block": start}
            yield from (_delta(i, "citations_delta", "citation", c) for c in block.get("citations") or [])
            pieces = char_pieces(block["text"], delta_chars) if delta_chars else text_pieces(block["text"])
            yield from (_delta(i, "text_delta", "text", p) for p in pieces)
        yield {"type": "content_block_stop", "index": i}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield {"type": "message_stop"}


def text_pieces(text: str, words: int = 3) -> list[str]:
    """Split text into small deltas (a few words each), concatenating back to the original."""
    tokens = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]


def char_pieces(text: str, size: int) -> list[str]:
    """Split text into deltas of `size` characters (the last may be shorter)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


class AnthropicEmulator:
    """aiohttp server on 127.0.0.1 speaking `POST /v1/messages` (JSON and SSE).

    Each request takes the next scripted item (`script`/`fail`), else the persistent failure
    (`always_fail`), else the first matching `when` rule, else the default answer.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        default_delay: float = 0.0,
        api_key: str | None = None,
        max_recorded: int | None = None,
        ttft: float = 0.0,
        tokens_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.default_delay = default_delay
        self.chunk_delay = 0.0  # seconds between streamed events, for time-to-first-token tests
        # Timing like the API: `ttft` seconds before the first token (streamed or not), then the
        # output at `tokens_per_second` (None: instantly). Streaming pays it per text delta.
        self.ttft = ttft
        self.tokens_per_second = tokens_per_second
        self.clock = clock  # the prompt cache's clock: a test moves it instead of sleeping 5 minutes
        self.default_text = CANNOT_ANSWER_TEXT
        # False: the default answer cites the last user message's first two search results;
        # True: the two results anywhere in the request sharing most words with the question.
        self.cite_relevant = False
        self.api_key = api_key  # when set, other keys get 401
        self.requests: list[RecordedRequest] = []
        self.max_recorded = max_recorded  # bound memory in long standalone runs
        self.calls = 0  # requests to /v1/messages (survives `max_recorded` trimming)
        self.statuses: Counter[int] = Counter()
        self.cache = PromptCache(lambda: self.clock())
        self._queue: deque[Reply | Failure] = deque()
        self._rules: list[tuple[Callable[[dict], bool], Reply | Failure]] = []
        self._storm: Failure | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # --- scripting -------------------------------------------------------------------------
    def script(self, *replies: Reply | Failure) -> None:
        """Queue answers for the next requests, in order."""
        self._queue.extend(replies)

    def fail(
        self,
        status: int = 529,
        *,
        times: int = 1,
        retry_after_ms: int | None = None,
        message: str | None = None,
        should_retry: bool | None = None,
        delay: float | None = None,
    ) -> None:
        """Queue `times` identical error responses."""
        failure = Failure(status, message, retry_after_ms=retry_after_ms, should_retry=should_retry, delay=delay)
        self._queue.extend([failure] * times)

    def always_fail(self, status: int | None = 529, *, retry_after_ms: int | None = None) -> None:
        """Fail every request (an outage/overload storm) until called with `None`."""
        self._storm = None if status is None else Failure(status, retry_after_ms=retry_after_ms)

    def when(self, predicate: Callable[[dict], bool], reply: Reply | Failure) -> None:
        """Persistent rule, e.g. answer classification calls (matched on the body) with a label, or
        fail them."""
        self._rules.append((predicate, reply))

    def reset(self) -> None:
        """Forget scripts, rules, the storm, recorded requests and the prompt cache."""
        self._queue.clear()
        self._rules.clear()
        self._storm = None
        self.requests.clear()
        self.calls = 0
        self.statuses.clear()
        self.cache = PromptCache(lambda: self.clock())

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> AnthropicEmulator:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Cancel handlers whose client went away (timeouts) and don't wait long for them on stop.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AnthropicEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- HTTP ------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/_emulator/stats":
            return web.json_response({"calls": self.calls, "statuses": dict(self.statuses)})
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body, time.time()
        )
        self.requests.append(record)
        if self.max_recorded is not None and len(self.requests) > self.max_recorded:
            del self.requests[: len(self.requests) - self.max_recorded]
        if request.path == "/v1/messages":
            self.calls += 1
        response = await self._respond(request, record)
        record.status = response.status
        self.statuses[response.status] += 1
        return response

    def _reject(self, request: web.Request, record: RecordedRequest, request_id: str) -> web.Response | None:
        """The checks the real API does before it looks at the model's answer."""
        if (request.method, request.path) != ("POST", "/v1/messages"):
            return error_response(404, "not_found_error", f"Not found: {request.method} {request.path}", request_id)
        headers = record.headers
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not key:
            return error_response(401, "authentication_error", "x-api-key header is required", request_id)
        if self.api_key is not None and key != self.api_key:
            return error_response(401, "authentication_error", "invalid x-api-key", request_id)
        if "anthropic-version" not in headers:
            return error_response(400, "invalid_request_error", "anthropic-version: header is required", request_id)
        body = record.body
        if not isinstance(body, dict):
            return error_response(400, "invalid_request_error", "Request body is not valid JSON", request_id)
        for field_name in ("model", "max_tokens", "messages"):
            if field_name not in body:
                return error_response(400, "invalid_request_error", f"{field_name}: Field required", request_id)
        if not isinstance(body["messages"], list) or not body["messages"]:
            return error_response(
                400, "invalid_request_error", "messages: at least one message is required", request_id
            )
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return error_response(400, "invalid_request_error", "max_tokens: must be a positive integer", request_id)
        for n, message in enumerate(body["messages"][:-1]):  # only a final assistant turn may be empty (prefill)
            content = message.get("content") if isinstance(message, dict) else None
            if not content or (isinstance(content, str) and not content.strip()):
                text = f"messages.{n}: all messages must have non-empty content except for the optional final assistant message"
                return error_response(400, "invalid_request_error", text, request_id)
        return None

    def _next_action(self, body: dict) -> Reply | Failure:
        if self._queue:
            return self._queue.popleft()
        if self._storm is not None:
            return self._storm
        return next((reply for predicate, reply in self._rules if predicate(body)), Reply())

    async def _respond(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        request_id = f"req_emu_{uuid.uuid4().hex[:24]}"
        rejected = self._reject(request, record, request_id)
        if rejected is not None:
            return rejected
        action = self._next_action(record.body)
        delay = self.default_delay if action.delay is None else action.delay
        if delay:
            await asyncio.sleep(delay)
        if isinstance(action, Failure):
            return action.response(request_id)
        try:
            message = self.build_message(record.body, action)
        except CacheError as exc:
            return error_response(400, "invalid_request_error", str(exc), request_id)
        if record.stream:
            return await self._stream(request, message, request_id, action)
        await asyncio.sleep(self.ttft + self.generation_seconds(message["usage"]["output_tokens"]))
        return web.json_response(message, headers={"request-id": request_id})

    def generation_seconds(self, tokens: int) -> float:
        return tokens / self.tokens_per_second if self.tokens_per_second else 0.0

    def build_message(self, body: dict, reply: Reply) -> dict:
        """The Message JSON for `body`, answered per `reply` (or the defaults)."""
        if reply.text is not None:
            text_block = {"type": "text", "text": reply.text}
            if reply.citations:
                text_block["citations"] = reply.citations
            content = [text_block]
        else:
            results = relevant_search_results(body) if self.cite_relevant else last_user_search_results(body)
            content = cited_answer(results, reply.cite) if results else [{"type": "text", "text": self.default_text}]
        if reply.ending:
            content.append({"type": "text", "text": reply.ending})
        thinking = reply.thinking
        if thinking is None and (body.get("thinking") or {}).get("type") == "enabled":
            thinking = "Let me check the provided sources."
        if thinking is not None:
            signature = base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()
            content.insert(0, {"type": "thinking", "thinking": thinking, "signature": signature})
        output = "".join(b.get("text") or b.get("thinking") or "" for b in content)
        return {
            "id": f"msg_emu_{next(self._ids):020d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {**self.cache.usage(body), "output_tokens": estimate_tokens(output)},
        }

    async def _stream(self, request: web.Request, message: dict, request_id: str, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": request_id,
            }
        )
        await response.prepare(request)
        if self.ttft:
            await asyncio.sleep(self.ttft)
        text_deltas = 0
        for event in stream_events(message, reply.delta_chars):
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                if reply.cut_after is not None and text_deltas >= reply.cut_after:
                    return await self._cut(request, response, reply.cut)
                text_deltas += 1
                if self.tokens_per_second:
                    await asyncio.sleep(self.generation_seconds(estimate_tokens(delta["text"])))
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await response.write_eof()
        return response

    async def _cut(self, request: web.Request, response: web.StreamResponse, how: str) -> web.StreamResponse:
        """End a stream midway: an `error` event (what the API sends when it is overloaded
        mid-stream), or the connection dropped without any ending."""
        if how == "error":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            await response.write(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
            await response.write_eof()
        else:
            assert request.transport is not None
            request.transport.abort()
        return response


async def _serve(args: argparse.Namespace) -> None:
    async with AnthropicEmulator(
        args.host, args.port, default_delay=args.delay, max_recorded=1000, ttft=args.ttft, tokens_per_second=args.tps
    ) as emu:
        print(f"Anthropic emulator listening on {emu.base_url} (delay {args.delay}s)", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Anthropic Messages API for local benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--tps", type=float, default=None, help="output tokens per second (default: instant)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
