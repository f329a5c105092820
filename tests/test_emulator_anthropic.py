"""The Anthropic emulator, exercised through the real `anthropic.AsyncAnthropic` SDK over HTTP."""

from __future__ import annotations

import aiohttp
import anthropic
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import CitationsSearchResultLocation, Message

from tests.emulators.anthropic_api import CANNOT_ANSWER_TEXT, INVENTED_CITATION, AnthropicEmulator, Reply

MODEL = "claude-sonnet-5-5"


def search_result(source: str, title: str, *texts: str) -> dict:
    return {
        "type": "search_result",
        "source": source,
        "title": title,
        "content": [{"type": "text", "text": t} for t in texts],
        "citations": {"enabled": True},
    }


def question_with_sources(question: str = "How do I reset my VPN token?") -> list[dict]:
    """Two turns, so the cited results' `search_result_index` must count the earlier one too."""
    return [
        {
            "role": "user",
            "content": [
                search_result("kb://old", "Old", "Earlier. Not relevant."),
                {"type": "text", "text": "Earlier question?"},
            ],
        },
        {"role": "assistant", "content": "Earlier answer."},
        {
            "role": "user",
            "content": [
                search_result("kb://vpn", "VPN guide", "Open the portal and click Reset token. Then wait.", "More."),
                search_result("kb://sso", "SSO FAQ", "Tokens expire after 90 days! Renew early."),
                search_result("kb://misc", "Misc", "Unrelated."),
                {"type": "text", "text": question},
            ],
        },
    ]


@pytest.fixture
async def emu():
    async with AnthropicEmulator() as emulator:
        yield emulator


@pytest.fixture
async def client(emu):
    sdk = AsyncAnthropic(base_url=emu.base_url, api_key="test-key", max_retries=0)
    yield sdk
    await sdk.close()


def cited_blocks(message: Message) -> list:
    return [b for b in message.content if b.type == "text" and b.citations]


async def test_answer_cites_search_results_as_sdk_objects(emu, client):
    msg = await client.messages.create(model=MODEL, max_tokens=500, messages=question_with_sources())

    assert msg.model == MODEL and msg.role == "assistant" and msg.stop_reason == "end_turn"
    blocks = cited_blocks(msg)
    assert [b.text.strip() for b in blocks] == [
        "Open the portal and click Reset token.",
        "Tokens expire after 90 days!",
    ]
    citations = [b.citations[0] for b in blocks]
    assert all(isinstance(c, CitationsSearchResultLocation) for c in citations)
    assert [(c.source, c.title, c.search_result_index) for c in citations] == [
        ("kb://vpn", "VPN guide", 1),
        ("kb://sso", "SSO FAQ", 2),
    ]
    assert (citations[0].start_block_index, citations[0].end_block_index) == (0, 1)
    assert citations[0].cited_text == "Open the portal and click Reset token. Then wait."

    recorded = emu.last
    assert recorded.path == "/v1/messages" and recorded.body["model"] == MODEL
    assert recorded.headers["anthropic-version"] and recorded.headers["authorization"] == "Bearer test-key"


async def test_without_sources_it_cannot_answer_and_scripts_win(emu, client):
    plain = [{"role": "user", "content": "Is this a question?"}]
    msg = await client.messages.create(model=MODEL, max_tokens=10, messages=plain)
    assert msg.content[0].text == CANNOT_ANSWER_TEXT

    emu.when(lambda body: "classify" in str(body.get("system")), Reply(text="question"))
    emu.script(Reply.cannot_answer())
    scripted = await client.messages.create(model=MODEL, max_tokens=10, messages=question_with_sources())
    assert [b.text for b in scripted.content] == [CANNOT_ANSWER_TEXT]
    label = await client.messages.create(model=MODEL, max_tokens=10, system="classify", messages=plain)
    assert label.content[0].text == "question"
    assert emu.calls == 3


async def test_stream_helper_yields_text_and_citations(emu, client):
    async with client.messages.stream(model=MODEL, max_tokens=500, messages=question_with_sources()) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()

    assert len(pieces) > 2
    assert "".join(pieces) == "".join(b.text for b in final.content)
    citations = [b.citations[0] for b in cited_blocks(final)]
    assert [(c.source, c.search_result_index) for c in citations] == [("kb://vpn", 1), ("kb://sso", 2)]
    assert final.usage.output_tokens > 1 and final.stop_reason == "end_turn"
    assert emu.last.stream and emu.last.headers["x-stainless-helper-method"] == "stream"


async def test_create_stream_true_emits_the_raw_event_sequence(client):
    stream = await client.messages.create(model=MODEL, max_tokens=500, messages=question_with_sources(), stream=True)
    events = [event async for event in stream]

    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert deltas.count("citations_delta") == 2 and "text_delta" in deltas
    assert events[-2].delta.stop_reason == "end_turn"


LONG_SYSTEM = "You are a support bot that answers from the documentation only. " * 120  # ~1,400 tokens


def cached_system(text: str = LONG_SYSTEM, **marker) -> list[dict]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", **marker}}]


async def test_repeated_prompt_reads_from_cache(client):
    ask = dict(model=MODEL, max_tokens=100, system=cached_system(), messages=question_with_sources())

    first = (await client.messages.create(**ask)).usage
    second = (await client.messages.create(**ask)).usage

    assert first.cache_creation_input_tokens >= 1024 and first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0 and second.input_tokens == first.input_tokens > 0
    total = first.input_tokens + first.cache_creation_input_tokens
    assert total == second.input_tokens + second.cache_read_input_tokens  # input_tokens is the uncached rest


async def test_a_prefix_below_the_models_minimum_caches_nothing_silently(emu, client):
    short = cached_system("You are a support bot. " * 50)  # ~300 tokens: below every minimum
    for _ in range(2):
        usage = (
            await client.messages.create(model=MODEL, max_tokens=50, system=short, messages=question_with_sources())
        ).usage
        assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    # ~1,400 tokens pass Sonnet's 1,024 minimum but not Haiku 4.5's 4,096
    sonnet = dict(max_tokens=50, system=cached_system(), messages=question_with_sources())
    assert (await client.messages.create(model="claude-sonnet-4-6", **sonnet)).usage.cache_creation_input_tokens > 0
    haiku = (await client.messages.create(model="claude-haiku-4-5-20251001", **sonnet)).usage
    assert haiku.cache_creation_input_tokens == 0 and haiku.cache_read_input_tokens == 0
    assert emu.cache.dead_breakpoints == 3


async def test_cache_is_an_exact_prefix_in_tools_system_messages_order(client):
    ask = dict(model=MODEL, max_tokens=50, system=cached_system(), messages=question_with_sources())
    await client.messages.create(**ask)
    changed = dict(ask, system=cached_system(LONG_SYSTEM + "!"))
    assert (await client.messages.create(**changed)).usage.cache_read_input_tokens == 0
    tool = {"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}
    with_tool = (await client.messages.create(**ask, tools=[tool])).usage  # tools come first: a new prefix
    assert with_tool.cache_read_input_tokens == 0 and with_tool.cache_creation_input_tokens > 0
    other_model = (await client.messages.create(**dict(ask, model="claude-sonnet-4-5"))).usage
    assert other_model.cache_read_input_tokens == 0  # caches are per model


async def test_a_later_breakpoint_reads_what_an_earlier_request_wrote_within_the_lookback(client):
    thread = question_with_sources()
    await client.messages.create(model=MODEL, max_tokens=50, system=cached_system(), messages=thread)
    longer = [*thread, {"role": "assistant", "content": "An answer."}]
    longer.append(
        {"role": "user", "content": [{"type": "text", "text": "And then?", "cache_control": {"type": "ephemeral"}}]}
    )
    usage = (await client.messages.create(model=MODEL, max_tokens=50, system=cached_system(), messages=longer)).usage
    assert usage.cache_read_input_tokens > 1024 and usage.cache_creation_input_tokens > 0
    assert usage.input_tokens == 0  # everything up to the last breakpoint was read or written


async def test_ttl_is_five_minutes_refreshed_on_each_read(emu, client):
    now = [1000.0]
    emu.clock = lambda: now[0]
    ask = dict(model=MODEL, max_tokens=50, system=cached_system(), messages=question_with_sources())
    await client.messages.create(**ask)
    now[0] += 299
    assert (await client.messages.create(**ask)).usage.cache_read_input_tokens > 0  # refreshed here
    now[0] += 299
    assert (await client.messages.create(**ask)).usage.cache_read_input_tokens > 0  # 598 s after the write
    now[0] += 301
    expired = (await client.messages.create(**ask)).usage
    assert expired.cache_read_input_tokens == 0 and expired.cache_creation_input_tokens > 0
    hour = dict(ask, system=cached_system(ttl="1h"))
    await client.messages.create(**hour)
    now[0] += 3000
    assert (await client.messages.create(**hour)).usage.cache_read_input_tokens > 0


async def test_more_than_four_breakpoints_is_a_400(client):
    blocks = [{"type": "text", "text": f"Part {i}.", "cache_control": {"type": "ephemeral"}} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4 blocks with cache_control"):
        await client.messages.create(model=MODEL, max_tokens=50, system=blocks, messages=question_with_sources())
    await client.messages.create(model=MODEL, max_tokens=50, system=blocks[:4], messages=question_with_sources())


async def test_time_to_first_token_and_tokens_per_second(emu, client):
    import time

    emu.ttft, emu.tokens_per_second = 0.3, 100.0
    began = time.perf_counter()
    async with client.messages.stream(model=MODEL, max_tokens=500, messages=question_with_sources()) as stream:
        first = None
        async for _ in stream.text_stream:
            first = first or time.perf_counter() - began
        final = await stream.get_final_message()
    total = time.perf_counter() - began
    assert 0.3 <= first < 0.3 + 0.5 and total >= 0.3 + 0.9 * final.usage.output_tokens / 100
    began = time.perf_counter()
    message = await client.messages.create(model=MODEL, max_tokens=500, messages=question_with_sources())
    assert time.perf_counter() - began >= 0.3 + 0.9 * message.usage.output_tokens / 100


@pytest.mark.parametrize("how", ["drop", "error"])
async def test_a_stream_cut_midway_raises_in_the_sdk_after_some_text(emu, client, how):
    emu.script(Reply(cut_after=2, cut=how, delta_chars=5))
    pieces: list[str] = []
    with pytest.raises(anthropic.APIError if how == "error" else Exception) as caught:
        async with client.messages.stream(model=MODEL, max_tokens=500, messages=question_with_sources()) as stream:
            async for piece in stream.text_stream:
                pieces.append(piece)
    assert len(pieces) == 2, pieces
    if how == "error":
        assert "overloaded" in str(caught.value).lower()


async def test_rate_limit_is_retried_after_retry_after_ms(emu):
    emu.fail(429, retry_after_ms=10)
    async with AsyncAnthropic(base_url=emu.base_url, api_key="k", max_retries=2) as sdk:
        msg = await sdk.messages.create(model=MODEL, max_tokens=10, messages=question_with_sources())

    assert cited_blocks(msg)
    assert emu.calls == 2 and [r.status for r in emu.requests] == [429, 200]
    assert emu.requests[1].headers["x-stainless-retry-count"] == "1"


async def test_overload_storm_exhausts_retries(emu):
    emu.always_fail(529, retry_after_ms=10)
    async with AsyncAnthropic(base_url=emu.base_url, api_key="k", max_retries=1) as sdk:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=question_with_sources())

    err = caught.value
    assert isinstance(err, anthropic.APIStatusError) and err.status_code == 529
    assert err.type == "overloaded_error" and err.request_id.startswith("req_")
    assert emu.calls == 2


async def test_should_retry_false_stops_sdk_retries(emu):
    emu.fail(500, should_retry=False)
    async with AsyncAnthropic(base_url=emu.base_url, api_key="k", max_retries=2) as sdk:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=question_with_sources())
    assert caught.value.type == "api_error" and emu.calls == 1


async def test_thinking_block_comes_first(emu, client):
    emu.script(Reply(thinking="The VPN guide covers this."), Reply(thinking="Streamed thoughts here."))
    msg = await client.messages.create(model=MODEL, max_tokens=500, messages=question_with_sources())
    assert [b.type for b in msg.content][:2] == ["thinking", "text"]
    assert msg.content[0].thinking == "The VPN guide covers this." and msg.content[0].signature

    async with client.messages.stream(model=MODEL, max_tokens=500, messages=question_with_sources()) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == "Streamed thoughts here."
    assert final.content[0].signature and cited_blocks(final)


async def test_invalid_requests_are_rejected_like_the_api(emu, client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.post("/v1/messages", cast_to=Message, body={"model": MODEL, "messages": []})
    assert caught.value.type == "invalid_request_error" and "max_tokens" in caught.value.api_message

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{emu.base_url}/v1/messages", json={"model": MODEL}) as resp:
            assert resp.status == 401 and resp.headers["request-id"]
            assert (await resp.json())["error"]["type"] == "authentication_error"
    assert emu.calls == 2 and emu.statuses == {400: 1, 401: 1}

    empty_turn = [
        {"role": "user", "content": "How do refunds work?"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "And partial ones?"},
    ]
    with pytest.raises(anthropic.BadRequestError, match="non-empty content"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=empty_turn)


async def test_slow_answer_times_out_in_the_sdk(emu, client):
    emu.script(Reply(delay=2.0))
    with pytest.raises(anthropic.APITimeoutError):
        await client.messages.create(model=MODEL, max_tokens=10, messages=question_with_sources(), timeout=0.2)
    assert emu.calls == 1


async def test_scripted_verdict_and_citation_shapes(emu, client):
    """The verdict ends the reply as its own text block; citations can cite the source, something
    the source never said, or nothing."""
    emu.script(Reply(verdict="partial"), Reply(cite="invented", tail="<verdict>maybe"), Reply(cite="none"))
    verified = await client.messages.create(model=MODEL, max_tokens=500, messages=question_with_sources())
    assert verified.content[-1].text == "\n\n<verdict>partial</verdict>" and not verified.content[-1].citations
    assert cited_blocks(verified)[0].citations[0].cited_text == "Open the portal and click Reset token. Then wait."

    invented = await client.messages.create(model=MODEL, max_tokens=500, messages=question_with_sources())
    assert invented.content[-1].text == "<verdict>maybe"
    assert {b.citations[0].cited_text for b in cited_blocks(invented)} == {INVENTED_CITATION}

    uncited = await client.messages.create(model=MODEL, max_tokens=500, messages=question_with_sources())
    assert not cited_blocks(uncited) and "Open the portal" in "".join(b.text for b in uncited.content)


async def test_stream_in_character_pieces_splits_the_tag(emu, client):
    emu.script(Reply(verdict="full", delta_chars=4))
    async with client.messages.stream(model=MODEL, max_tokens=500, messages=question_with_sources()) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    assert all(len(piece) <= 4 for piece in pieces)
    assert pieces[-7:] == ["\n\n<v", "erdi", "ct>f", "ull<", "/ver", "dict", ">"]
    assert "".join(pieces) == "".join(b.text for b in final.content) and final.content[-1].text.endswith(
        "<verdict>full</verdict>"
    )
    assert [b.citations[0].search_result_index for b in cited_blocks(final)] == [1, 2]
