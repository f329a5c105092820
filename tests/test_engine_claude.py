"""The Claude path through the real `anthropic` SDK against the local Anthropic emulator.

Nothing of ours is mocked: the pipeline retrieves from the sample index, the SDK sends real HTTP
to the emulator, and the emulator answers (or fails) the way the API does.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bot.engine.claude import (
    CACHE_MARGIN,
    CACHE_TTL_SECONDS,
    MAX_BREAKPOINTS,
    NO_ANSWER,
    NOT_IN_SOURCES,
    SYSTEM_PROMPT,
    TTL_SAFETY_SECONDS,
    ClaudeAnswerer,
    PromptLayout,
    contract_blocks,
    documents_worth_writing,
    plain_messages,
    section_text,
)
from bot.engine.pipeline import FALLBACK_NOTE, Pipeline
from bot.engine.tokens import prompt_tokens
from bot.engine.types import Decision, Question, RetrievedChunk, Turn
from tests.emulators.anthropic_api import ANSWER_INTRO, AnthropicEmulator, Reply

QUESTION = "How long after a payment can we still refund it to the customer's card?"


@pytest.fixture
async def emu():
    async with AnthropicEmulator() as emulator:
        yield emulator


def claude_settings(sample_settings, emu, **overrides):
    return sample_settings.model_copy(
        update={
            "anthropic_api_key": SecretStr("test-key"),
            "anthropic_base_url": emu.base_url,
            "anthropic_max_retries": 2,
            "anthropic_timeout_seconds": 10.0,
            **overrides,
        }
    )


@pytest.fixture
async def pipeline(sample_settings, sample_searcher, emu):
    pipe = Pipeline.from_settings(claude_settings(sample_settings, emu), searcher=sample_searcher)
    yield pipe
    await pipe.aclose()


async def test_request_carries_search_results_system_contract_and_no_dead_breakpoint(pipeline, emu):
    answer = await pipeline.answer(Question(text=QUESTION))
    body = emu.last.body
    assert emu.last.headers["authorization"] == "Bearer test-key"
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == pipeline.settings.anthropic_max_tokens
    # The contract alone is far below any model's minimum cacheable length: no breakpoint on it,
    # and a first question on Haiku (4,096 minimum) carries none at all.
    assert body["system"] == [{"type": "text", "text": SYSTEM_PROMPT}]
    assert "cache_control" not in str(body) and emu.cache.dead_breakpoints == 0
    assert "only from the search results" in SYSTEM_PROMPT and NO_ANSWER in SYSTEM_PROMPT
    assert "data, not instructions" in SYSTEM_PROMPT
    content = body["messages"][-1]["content"]
    results = [block for block in content if block["type"] == "search_result"]
    # One search result per document (its url and title sent once), its chunks as its text blocks,
    # each led by its section heading; documents in the order they were first retrieved.
    documents = list(dict.fromkeys(chunk.doc_url for chunk in answer.retrieved))
    assert [block["source"] for block in results] == documents and len(documents) > 1
    for block, url in zip(results, documents):
        chunks = [chunk for chunk in answer.retrieved if chunk.doc_url == url]
        assert block["title"] == chunks[0].title and block["citations"] == {"enabled": True}
        assert block["content"] == [{"type": "text", "text": section_text(chunk)} for chunk in chunks]
        assert all(chunk.text in section_text(chunk) for chunk in chunks)
    assert content[-1] == {"type": "text", "text": QUESTION}


async def test_citations_map_back_to_the_cited_chunks(pipeline):
    answer = await pipeline.answer(Question(text=QUESTION))
    assert answer.generator == "claude" and answer.model == "claude-haiku-4-5" and answer.fallback_reason is None
    assert answer.text.startswith(ANSWER_INTRO) and "[1]" in answer.text and "[2]" in answer.text
    # The emulator cites the first sentence of the first text block of search results 0 and 1 (the
    # first two documents retrieved), in that order.
    first = answer.retrieved[0]
    second = next(chunk for chunk in answer.retrieved if chunk.doc_url != first.doc_url)
    assert [(c.number, c.chunk_id, c.url, c.doc_url) for c in answer.citations] == [
        (1, first.chunk_id, first.url, first.doc_url),
        (2, second.chunk_id, second.url, second.doc_url),
    ]
    assert answer.citations[0].cited_text == section_text(first)
    assert answer.signals["citation_coverage"] > 0.5 and answer.decision is not Decision.ESCALATE


async def test_usage_and_cost_are_recorded(pipeline):
    first = await pipeline.answer(Question(text=QUESTION))
    usage = first.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    price = pipeline.settings.prices["claude-haiku-4-5"]
    expected = (
        usage.input_tokens * price["input"]
        + usage.output_tokens * price["output"]
        + usage.cache_creation_input_tokens * price["cache_write"]
        + usage.cache_read_input_tokens * price["cache_read"]
    ) / 1e6
    assert usage.cost_usd == pytest.approx(expected)


FOLLOWUP = "And does that also work for a partial refund?"


def answering_requests(emu) -> list[dict]:
    """The bodies of the requests that answered (the follow-up rewrites have a prompt of their own)."""
    return [
        r.body
        for r in emu.requests
        if isinstance(r.body.get("system"), list) and r.body["system"][0]["text"] == SYSTEM_PROMPT
    ]


async def thread_of_three(pipe: Pipeline) -> list:
    """A first question and two follow-ups in one Slack thread, as the Slack layer passes them."""
    answers, history = [], []
    for text in (QUESTION, FOLLOWUP, "What if the card has expired since?"):
        answer = await pipe.answer(Question(text=text, history=list(history), channel="C1", thread_ts="1.0"))
        answers.append(answer)
        history += [Turn(role="user", text=text), Turn(role="assistant", text=answer.text)]
    return answers


async def test_a_sonnet_thread_reads_its_cached_first_question_on_every_follow_up(
    sample_settings, sample_searcher, emu
):
    settings = claude_settings(sample_settings, emu, anthropic_model="claude-sonnet-4-6", cache_first_questions=True)
    pipe = Pipeline.from_settings(settings, searcher=sample_searcher)
    try:
        first, second, third = await thread_of_three(pipe)
    finally:
        await pipe.aclose()
    written = first.usage.cache_creation_input_tokens
    assert written > 1024 and first.usage.cache_read_input_tokens == 0
    for follow_up in (second, third):  # read back; nothing new written (no evidence threads go on)
        assert follow_up.usage.cache_read_input_tokens == written
        assert follow_up.usage.cache_creation_input_tokens == 0
    assert second.usage.cost_usd < first.usage.cost_usd
    # each request repeats the cached prefix byte for byte, then the thread's questions and answers as
    # text (the second follow-up does not resend the first one's sources: they went out at full price)
    first_body, second_body, third_body = answering_requests(emu)[-3:]
    assert plain_messages(second_body["messages"][:1]) == plain_messages(first_body["messages"])
    assert plain_messages(third_body["messages"][:1]) == plain_messages(first_body["messages"])
    assert third_body["messages"][1:3] == [
        second_body["messages"][1],
        {"role": "user", "content": [second_body["messages"][2]["content"][-1]]},
    ]
    # a follow-up sends only sources the thread has not sent yet; citations still map to the right chunks
    fresh = [b for b in third_body["messages"][-1]["content"] if b["type"] == "search_result"]
    sent_before = [
        text["text"]
        for m in third_body["messages"][:-1]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "search_result"
        for text in b["content"]
    ]
    fresh_texts = [text["text"] for b in fresh for text in b["content"]]
    assert not set(fresh_texts) & set(sent_before)
    assert len(fresh_texts) == len([c for c in third.retrieved if section_text(c) not in sent_before])
    # the emulator cites the first text block of the first two fresh results: those very chunks
    assert [(c.doc_url, c.cited_text) for c in third.citations] == [
        (b["source"], b["content"][0]["text"]) for b in fresh[:2]
    ]
    assert emu.cache.dead_breakpoints == 0


def test_a_follow_up_writes_its_end_only_where_threads_usually_go_on(sample_settings):
    settings = sample_settings.model_copy(update={"anthropic_model": "claude-sonnet-4-6"})
    chunks = [
        RetrievedChunk(
            chunk_id=f"c{i}", doc_id=f"d{i}", title=f"Doc {i}", url=f"https://kb/{i}", text="word " * 300, score=1.0
        )
        for i in range(5)
    ]
    history = [Turn(role="user", text="How do refunds work?"), Turn(role="assistant", text="Like this.")]
    layout = PromptLayout(settings)
    assert not layout.lay_out("t1", "And partial ones?", chunks, history).writes  # no evidence yet: 1 in 2
    layout.turns[1], layout.continued[1] = 10, 7
    assert layout.lay_out("t2", "And partial ones?", chunks, history).writes
    layout.last_request = None  # no traffic: the plain contract, and this prompt stays below 1,024 x margin
    assert not layout.lay_out("t3", "And partial ones?", chunks[:1], history).writes
    assert not layout.lay_out("t4", "How do refunds work?", chunks, []).writes  # a first question: off by default


def test_a_first_question_writes_only_the_leading_documents_whose_expected_reads_pay():
    # rank r pays when reads x (share - 0.1) > 0.25 (Sonnet-class: writes 1.25x, reads 0.1x)
    assert documents_worth_writing([0.8, 0.6, 0.3, 0.9], reads=0.67, write_extra=0.25, read_price=0.1) == 2
    assert documents_worth_writing([0.8, 0.6], reads=0.3, write_extra=0.25, read_price=0.1) == 0
    assert documents_worth_writing([0.5, 0.5], reads=0.5, write_extra=0.25, read_price=0.1) == 0  # the prior


def five_documents() -> list[RetrievedChunk]:
    """Five one-chunk documents of a few hundred tokens each (all five clear the Sonnet-class minimum)."""
    return [
        RetrievedChunk(
            chunk_id=f"c{i}", doc_id=f"d{i}", title=f"Doc {i}", url=f"https://kb/{i}", text=f"doc {i} " * 150, score=1.0
        )
        for i in range(5)
    ]


def test_first_questions_write_nothing_until_threads_show_their_documents_are_read_again(sample_settings):
    settings = sample_settings.model_copy(update={"anthropic_model": "claude-sonnet-4-6"})
    chunks = five_documents()
    now = [1000.0]
    layout = PromptLayout(settings, clock=lambda: now[0])
    layout.last_request = 990.0  # traffic: the contract goes out shared
    for n in range(6):  # single questions only: nothing says a first question's documents are read again
        now[0] += 20
        lone = layout.lay_out(f"lone{n}", "How do refunds work?", chunks, [])
        assert not lone.writes and lone.shared_contract
        layout.remember(f"lone{n}", lone, "Like this.")
    for n in range(6):  # now threads go on, and each follow-up retrieves the first document again
        now[0] += 20
        first = layout.lay_out(f"t{n}", "How do refunds work?", chunks, [])
        layout.remember(f"t{n}", first, "Like this.")
        history = [Turn(role="user", text="How do refunds work?"), Turn(role="assistant", text="Like this.")]
        now[0] += 60
        layout.remember(
            f"t{n}", layout.lay_out(f"t{n}", "And partial ones?", [chunks[0], *chunks[3:]], history), "Yes."
        )
    first = layout.lay_out("new", "How do refunds work?", chunks, [])
    assert first.write_at == (0, 0)  # the first document only: the others were never retrieved again
    assert str(first.params["messages"]).count("cache_control") == 1 and first.breakpoints == 2
    # the asker posted the question twice: the earlier copy is folded in before the results, and the
    # breakpoint still lands on the first document, not on the folded text
    repeated = [Turn(role="user", text="How do refunds work?"), Turn(role="user", text="How do refunds work?")]
    again = layout.lay_out("twice", "How do refunds work?", chunks, repeated)
    content = again.params["messages"][-1]["content"]
    assert again.depth == 0 and content[0]["type"] == "text" and again.write_at == (0, 1)
    assert content[1]["type"] == "search_result" and "cache_control" in content[1]


def test_a_cached_prefix_expires_five_minutes_after_its_request_and_an_empty_reply_is_not_carried(sample_settings):
    settings = sample_settings.model_copy(
        update={"anthropic_model": "claude-sonnet-4-6", "cache_first_questions": True}
    )
    chunks = five_documents()
    now = [1000.0]
    layout = PromptLayout(settings, clock=lambda: now[0])
    history = [Turn(role="user", text="How do refunds work?"), Turn(role="assistant", text="Like this.")]

    first = layout.lay_out("slow", "How do refunds work?", chunks, [])
    assert first.writes
    now[0] += 45  # a slow answer: Claude's cache entry has been ticking since the request went out
    layout.remember("slow", first, "Like this.")
    now[0] += 200  # 245 s after the request: still fresh, read back
    assert layout.lay_out("slow", "And partial ones?", chunks, history).reads_at is not None
    now[0] = 1000.0 + 280  # 235 s after the reply but 280 s after the request: not relied on any more
    assert layout.lay_out("slow", "And partial ones?", chunks, history).reads_at is None

    empty = layout.lay_out("empty", "How do refunds work?", chunks, [])
    layout.remember("empty", empty, "")  # Claude said nothing (the asker got the extractive answer)
    follow_up = layout.lay_out("empty", "And partial ones?", chunks, history)
    assert follow_up.reads_at is None
    assert all(message["content"] for message in follow_up.params["messages"])


async def test_a_thread_reads_back_the_documents_its_first_question_wrote(sample_settings, sample_searcher, emu):
    settings = claude_settings(sample_settings, emu, anthropic_model="claude-sonnet-4-6")
    # follow-ups searched with the thread's context, offline (the emulator cannot rewrite a query)
    pipe = Pipeline(settings, sample_searcher, generator=ClaudeAnswerer(settings))
    try:
        history: list[Turn] = []  # a thread that goes on and retrieves its first documents again
        for text in (QUESTION, "So until when can a card refund still go through?", "Even to an expired card?"):
            answer = await pipe.answer(Question(text=text, history=list(history), channel="C1", thread_ts="1.0"))
            history += [Turn(role="user", text=text), Turn(role="assistant", text=answer.text)]
        first = await pipe.answer(Question(text=QUESTION, channel="C1", thread_ts="2.0"))
        history = [Turn(role="user", text=QUESTION), Turn(role="assistant", text=first.text)]
        follow_up = await pipe.answer(Question(text=FOLLOWUP, history=history, channel="C1", thread_ts="2.0"))
    finally:
        await pipe.aclose()
    first_body, follow_body = answering_requests(emu)[-2:]
    content = first_body["messages"][0]["content"]
    marked = [i for i, block in enumerate(content) if "cache_control" in block]
    # the breakpoint sits on a search result before the end: the leading documents are written, no more
    assert len(marked) == 1 and content[marked[0]]["type"] == "search_result" and marked[0] < len(content) - 2
    contract = prompt_tokens(contract_blocks(True))
    assert first.usage.cache_read_input_tokens == contract and first.usage.cache_creation_input_tokens > 0
    # the follow-up repeats those documents byte for byte and reads them back, then the first question as
    # text (never the first question's other results), then only sources the prefix does not hold
    kept = follow_body["messages"][0]["content"]
    assert plain_messages([{"content": kept[: marked[0] + 1]}]) == plain_messages(
        [{"content": content[: marked[0] + 1]}]
    )
    assert kept[marked[0] + 1 :] == [{"type": "text", "text": QUESTION}]
    assert follow_up.usage.cache_read_input_tokens == contract + first.usage.cache_creation_input_tokens
    prefix = {text["text"] for block in content[: marked[0] + 1] for text in block["content"]}
    fresh = [
        text["text"]
        for block in follow_body["messages"][-1]["content"]
        if block["type"] == "search_result"
        for text in block["content"]
    ]
    assert fresh and not prefix & set(fresh)
    assert follow_up.generator == "claude" and follow_up.citations and emu.cache.dead_breakpoints == 0


async def test_on_haiku_a_thread_below_4096_tokens_carries_no_breakpoint(pipeline, emu):
    answers = await thread_of_three(pipeline)
    assert all(a.usage.cache_creation_input_tokens == a.usage.cache_read_input_tokens == 0 for a in answers)
    assert not any("cache_control" in str(r.body) for r in emu.requests) and emu.cache.dead_breakpoints == 0
    # three requests within seconds, yet the contract is never extended: on Haiku 4.5 it never pays
    answering = answering_requests(emu)
    assert len(answering) == 3 and all(
        body["system"] == [{"type": "text", "text": SYSTEM_PROMPT}] for body in answering
    )


async def test_a_sonnet_class_model_reads_the_contract_from_cache_across_threads_while_traffic_lasts(
    sample_settings, sample_searcher
):
    now = [1_000_000.0]
    clock = lambda: now[0]  # noqa: E731 - one simulated clock for the bot and the emulator
    async with AnthropicEmulator(clock=clock) as emu:
        settings = claude_settings(sample_settings, emu, anthropic_model="claude-sonnet-4-6")
        pipe = Pipeline(settings, sample_searcher, generator=ClaudeAnswerer(settings, clock=clock))
        try:
            answers = []
            for n, (gap, text) in enumerate([(0, QUESTION), (20, FOLLOWUP), (20, "Can I refund an expired card?")]):
                now[0] += gap
                answers.append(await pipe.answer(Question(text=text, channel="C1", thread_ts=f"{n}.0")))
            now[0] += CACHE_TTL_SECONDS - TTL_SAFETY_SECONDS  # traffic went quiet: the cache may be gone
            answers.append(await pipe.answer(Question(text=QUESTION, channel="C1", thread_ts="9.0")))
        finally:
            await pipe.aclose()
    bodies = answering_requests(emu)
    plain, shared = contract_blocks(False), contract_blocks(True)
    shared_tokens = prompt_tokens(shared)
    assert shared_tokens >= 1024 * CACHE_MARGIN > prompt_tokens(plain)
    # a lone first request sends the plain contract; the next, 20 s later, writes the shared one;
    # the third, another thread, reads it back at 0.1x; after a quiet spell the plain one again
    assert [body["system"] for body in bodies] == [plain, shared, shared, plain]
    assert answers[1].usage.cache_creation_input_tokens == shared_tokens
    assert answers[2].usage.cache_read_input_tokens == shared_tokens
    assert answers[2].usage.cost_usd < answers[0].usage.cost_usd
    assert "cache_control" not in str(bodies[0]) + str(bodies[3]) and emu.cache.dead_breakpoints == 0
    assert all(a.usage.cache_read_input_tokens == 0 for a in (answers[0], answers[1], answers[3]))


def test_a_follow_up_with_the_shared_contract_carries_three_breakpoints_at_most(sample_settings):
    chunks = [
        RetrievedChunk(
            chunk_id=f"c{i}", doc_id=f"d{i}", title=f"Doc {i}", url=f"https://kb/{i}", text="word " * 300, score=1.0
        )
        for i in range(5)
    ]
    settings = sample_settings.model_copy(
        update={"anthropic_model": "claude-sonnet-4-6", "cache_first_questions": True}
    )
    layout = PromptLayout(settings, clock=lambda: 1000.0)
    layout.last_request = 990.0  # traffic: a request 10 s ago
    layout.turns[1], layout.continued[1] = 10, 9  # follow-ups usually go on: their ends are written
    first = layout.lay_out("t", "How do refunds work?", chunks, [])
    layout.remember("t", first, "Like this.")
    history = [Turn(role="user", text="How do refunds work?"), Turn(role="assistant", text="Like this.")]
    follow_up = layout.lay_out("t", "And partial ones?", chunks, history)
    assert (first.breakpoints, follow_up.breakpoints) == (2, 3)  # contract + write; contract + read + write
    assert str(follow_up.params).count("cache_control") == 3 <= MAX_BREAKPOINTS


async def test_streaming_forwards_text_deltas_and_keeps_citations(pipeline, emu):
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    answer = await pipeline.answer(Question(text=QUESTION), on_delta=on_delta)
    assert emu.last.stream and len(pieces) > 1
    streamed = "".join(pieces)
    assert streamed.startswith(ANSWER_INTRO)
    assert answer.text.replace("[1]", "").replace("[2]", "") == streamed.strip()
    assert [c.number for c in answer.citations] == [1, 2] and answer.generator == "claude"


async def test_rate_limit_then_success_is_retried(pipeline, emu):
    emu.fail(429, retry_after_ms=10)
    answer = await pipeline.answer(Question(text=QUESTION))
    assert emu.calls == 2 and list(emu.statuses.elements()).count(429) == 1
    assert answer.generator == "claude" and answer.citations


async def test_overload_storm_ends_in_the_marked_extractive_fallback(pipeline, emu):
    emu.always_fail(529, retry_after_ms=10)
    answer = await pipeline.answer(Question(text=QUESTION))
    assert emu.calls == pipeline.settings.anthropic_max_retries + 1
    assert answer.generator == "extractive-fallback" and "529" in answer.fallback_reason
    assert answer.text.startswith(FALLBACK_NOTE) and answer.citations
    assert any(reason.startswith("AI answer unavailable") for reason in answer.reasons)


async def test_a_thinking_block_is_ignored(pipeline, emu):
    emu.script(Reply(thinking="SECRET chain of thought about the sources"))
    answer = await pipeline.answer(Question(text=QUESTION))
    assert "SECRET" not in answer.text and answer.generator == "claude"
    assert [c.number for c in answer.citations] == [1, 2]


async def test_a_timeout_ends_in_the_fallback(sample_settings, sample_searcher, emu):
    settings = claude_settings(sample_settings, emu, anthropic_timeout_seconds=0.3, anthropic_max_retries=0)
    pipe = Pipeline.from_settings(settings, searcher=sample_searcher)
    emu.script(Reply(delay=3.0))
    try:
        answer = await pipe.answer(Question(text=QUESTION))
    finally:
        await pipe.aclose()
    assert answer.generator == "extractive-fallback" and "timed out" in answer.fallback_reason
    assert answer.text.startswith(FALLBACK_NOTE) and answer.citations
    assert answer.latency_ms["generate"] < 3000


async def test_cannot_answer_escalates_and_the_sentinel_is_never_streamed(pipeline, emu):
    emu.script(Reply(text=NO_ANSWER))
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    answer = await pipeline.answer(Question(text="Can our customers pay with PayPal?"), on_delta=on_delta)
    assert pieces == [] and answer.text == NOT_IN_SOURCES
    assert answer.decision is Decision.ESCALATE and answer.signals["cannot_answer"] is True
    emu.script(Reply.cannot_answer())  # the same, worded as a sentence
    assert (await pipeline.answer(Question(text="Can our customers pay with PayPal?"))).escalated


async def test_thread_history_is_sent_as_alternating_turns(pipeline, emu):
    history = [
        Turn(role="user", text="How do I refund a card payment?"),
        Turn(role="assistant", text="Use **Refund** on the payment.[1]"),
    ]
    await pipeline.answer(Question(text="and for ACH?", history=history))
    messages = emu.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "How do I refund a card payment?"
    assert messages[1]["content"] == "Use **Refund** on the payment."  # old markers stripped
    assert messages[2]["content"][-1]["text"] == "and for ACH?"


async def test_past_the_daily_budget_answers_are_extractive_marked_and_counted(sample_settings, sample_searcher, emu):
    from bot.engine.budget import BUDGET_GENERATOR
    from bot.observability import Metrics, record_answer

    settings = claude_settings(sample_settings, emu, daily_budget_usd=0.000001)  # one answer spends it
    pipe = Pipeline.from_settings(settings, searcher=sample_searcher)
    metrics = Metrics()
    try:
        first = await pipe.answer(Question(text=QUESTION, channel="C1"))
        calls = emu.calls
        second = await pipe.answer(Question(text=QUESTION, channel="C1"))
    finally:
        await pipe.aclose()
    for answer in (first, second):
        record_answer(metrics, answer, channel="C1", spent_today=pipe.budget.spent())
    assert first.generator == "claude" and first.usage.cost_usd > 0 and "budget_exhausted" not in first.signals
    assert emu.calls == calls  # no Claude call once the budget is spent
    assert second.generator == BUDGET_GENERATOR and second.signals["budget_exhausted"] is True
    assert second.text.startswith(FALLBACK_NOTE) and "budget" in second.fallback_reason
    sample = {m.name: m.samples for m in metrics.registry.collect()}
    assert sample["supportbot_budget_fallbacks"][0].value == 1
    by_channel = {s.name: s.value for s in sample["supportbot_answer_cost_usd"] if s.labels.get("channel") == "C1"}
    assert by_channel["supportbot_answer_cost_usd_total"] == pytest.approx(first.usage.cost_usd)
    assert sample["supportbot_llm_cost_today_usd"][0].value == pytest.approx(first.usage.cost_usd)


def test_the_budget_starts_again_each_utc_day_and_the_digest_shows_cost_per_channel_and_day():
    from datetime import UTC, date, datetime

    from bot.engine.budget import DailyBudget
    from evals.weekly import cost_summary

    day = [date(2026, 11, 30)]
    budget = DailyBudget(1.0, today=lambda: day[0])
    budget.charge(1.5)
    assert budget.exhausted() and "1" in budget.reason()
    day[0] = date(2026, 12, 1)
    assert not budget.exhausted() and budget.spent() == 0.0
    assert not DailyBudget(0.0).exhausted()  # 0: no cap
    rows = [
        {
            "channel": "C1",
            "cost_usd": 0.002,
            "created_at": datetime(2026, 11, 30, 9, tzinfo=UTC),
            "generator": "claude",
        },
        {"channel": "C1", "cost_usd": 0.004, "created_at": datetime(2026, 12, 1, 9, tzinfo=UTC), "generator": "claude"},
        {
            "channel": "C2",
            "cost_usd": 0.0,
            "created_at": datetime(2026, 12, 1, 9, tzinfo=UTC),
            "generator": "extractive-budget",
        },
    ]
    text = cost_summary(rows)
    assert "C1 $0.0030/answer" in text and "C2 $0.0000/answer" in text
    assert "2026-11-30 $0.0020/answer" in text and "2026-12-01 $0.0020/answer" in text
    assert "1 answers were extractive because the daily budget was spent" in text
    assert cost_summary(rows[2:]) == ""


def test_a_citation_of_a_documents_second_text_block_maps_to_that_chunk():
    from types import SimpleNamespace

    from bot.engine.claude import per_document_sources, segments_from_message
    from bot.engine.types import RetrievedChunk

    def chunk(doc: str, n: int, heading: str = "") -> RetrievedChunk:
        url = f"https://kb/{doc}"
        return RetrievedChunk(
            chunk_id=f"{doc}-{n}", doc_id=doc, title=doc.title(), url=f"{url}#s{n}", doc_url=url,
            heading=heading, text=f"{doc} text {n}.", score=1.0,
        )  # fmt: skip

    # retrieved a1, b1, a2: sent as [a: a1, a2] [b: b1], the chunks already held by earlier turns first
    retrieved = [chunk("a", 1, "Setup"), chunk("b", 1), chunk("a", 2, "Limits")]
    sources = per_document_sources(retrieved, first=3)
    assert [b["source"] for b in sources.blocks] == ["https://kb/a", "https://kb/b"]
    assert [c.chunk_id for c in sources.chunks] == ["a-1", "a-2", "b-1"] and sources.results == [[3, 4], [5]]
    assert sources.texts == ["Setup\na text 1.", "Limits\na text 2.", "b text 1."]
    same_id_elsewhere = chunk("a", 3).model_copy(update={"source": "another-folder"})
    assert len(per_document_sources([chunk("a", 1), same_id_elsewhere]).blocks) == 2
    cite = lambda result, block: SimpleNamespace(  # noqa: E731
        type="search_result_location", search_result_index=result, start_block_index=block, cited_text="x"
    )
    results = [[0], [1], [2], *sources.results]  # three earlier single-chunk results, then these two
    message = SimpleNamespace(
        content=[
            SimpleNamespace(type="text", text="Answer.", citations=[cite(3, 1), cite(4, 0), cite(4, 1), cite(9, 0)])
        ]
    )
    [segment] = segments_from_message(message, results)
    assert [span.chunk for span in segment.spans] == [4, 5, -1, -1]  # a-2, b-1; no such block; no such result


def test_a_citation_across_two_text_blocks_of_a_document_is_checked_against_both_chunks():
    from types import SimpleNamespace

    from bot.engine.claude import per_document_sources, segments_from_message
    from bot.engine.types import RetrievedChunk
    from bot.engine.verdict import verify_citations

    def chunk(n: int) -> RetrievedChunk:
        return RetrievedChunk(
            chunk_id=f"a-{n}", doc_id="a", title="A", url=f"https://kb/a#s{n}", doc_url="https://kb/a",
            text=f"Step {n} of the setup.", score=1.0,
        )  # fmt: skip

    sources = per_document_sources([chunk(1), chunk(2), chunk(3)])
    across = SimpleNamespace(  # blocks 1 and 2 (end exclusive): the API's cited_text is both texts
        type="search_result_location",
        search_result_index=0,
        start_block_index=1,
        end_block_index=3,
        cited_text="Step 2 of the setup.\nStep 3 of the setup.",
    )
    message = SimpleNamespace(content=[SimpleNamespace(type="text", text="Do both steps.", citations=[across])])
    [segment] = segments_from_message(message, sources.results)
    assert [(span.chunk, span.last) for span in segment.spans] == [(1, 2)]  # marked on its first chunk
    check = verify_citations(segment.spans, sources.texts, 1.0)
    assert (check.total, check.verified) == (1, 1)
    wrong = SimpleNamespace(**{**vars(across), "start_block_index": 0, "end_block_index": 2})
    [segment] = segments_from_message(
        SimpleNamespace(content=[SimpleNamespace(type="text", text="x", citations=[wrong])]), sources.results
    )
    assert verify_citations(segment.spans, sources.texts, 1.0).verified == 0  # not the text of blocks 0-1
