"""With a key, Claude rewrites follow-ups into self-contained queries: through the real SDK against
the Anthropic emulator (used, cached per thread, and a slow or failing API falls back to offline)."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from bot.engine.pipeline import Pipeline
from bot.engine.rewrite import REWRITE_PROMPT, clean_rewrite, thread_prompt
from bot.engine.types import Question, Turn
from tests.emulators.anthropic_api import AnthropicEmulator, Failure, Reply

SEPA = "https://help.tallybook.example/payments/sepa-direct-debit"
REWRITTEN = "Does SEPA Direct Debit work with a connected Stripe account?"
HISTORY = [
    Turn(role="user", text="how do I set up sepa direct debit for a customer in germany"),
    Turn(role="assistant", text="Switch SEPA on under Payment methods.[1]", sources=[SEPA]),
]


def is_rewrite(body: dict) -> bool:
    return body.get("system") == REWRITE_PROMPT


@pytest.fixture
async def emu():
    async with AnthropicEmulator() as emulator:
        yield emulator


ANSWER_MODEL, CHEAP_MODEL = "claude-sonnet-4-6", "claude-haiku-4-5"


@pytest.fixture
async def pipeline(sample_settings, sample_searcher, emu):
    settings = sample_settings.model_copy(
        update={
            "anthropic_api_key": SecretStr("test-key"),
            "anthropic_base_url": emu.base_url,
            "anthropic_max_retries": 0,
            "anthropic_timeout_seconds": 10.0,
            "anthropic_model": ANSWER_MODEL,
            "anthropic_cheap_model": CHEAP_MODEL,
        }
    )
    pipe = Pipeline.from_settings(settings, searcher=sample_searcher)
    yield pipe
    await pipe.aclose()


def rewrites(emu) -> list:
    return [request for request in emu.requests if isinstance(request.body, dict) and is_rewrite(request.body)]


def test_prompt_and_reply_cleaning():
    prompt = thread_prompt("does it work?", HISTORY)
    assert (
        prompt.index("user: how do I set up sepa")
        < prompt.index("assistant: Switch SEPA")
        < prompt.index("does it work?")
    )
    assert clean_rewrite('\n  "Does SEPA work with Stripe?"\nbecause...') == "Does SEPA work with Stripe?"
    assert clean_rewrite("  \n ") is None


async def test_the_rewrite_leads_retrieval_and_is_cached_per_thread(pipeline, emu):
    emu.when(is_rewrite, Reply(text=REWRITTEN))
    question = Question(text="does it work if we connected stripe?", history=HISTORY, channel="C1", thread_ts="1.0")
    answer = await pipeline.answer(question)
    assert answer.search_query == REWRITTEN
    assert SEPA in [chunk.doc_url for chunk in answer.retrieved][:2]
    [request] = rewrites(emu)
    assert "sepa direct debit for a customer in germany" in request.body["messages"][0]["content"]
    assert request.body["max_tokens"] <= 100
    # model routing: the rewrite goes to the cheap model, the answer to the configured one
    assert request.body["model"] == CHEAP_MODEL and answer.model == ANSWER_MODEL
    assert {r.body["model"] for r in emu.requests if r.body.get("messages") and not is_rewrite(r.body)} == {
        ANSWER_MODEL
    }
    again = await pipeline.answer(question.model_copy(update={"interaction_id": "second"}))
    assert again.search_query == REWRITTEN and len(rewrites(emu)) == 1  # same thread, same message: cached
    elsewhere = await pipeline.answer(question.model_copy(update={"thread_ts": "2.0"}))
    assert elsewhere.search_query == REWRITTEN and len(rewrites(emu)) == 2
    first = await pipeline.answer(Question(text="How do I refund a card payment?"))
    assert first.search_query == "How do I refund a card payment?" and len(rewrites(emu)) == 2  # no thread, no rewrite


@pytest.mark.parametrize("trouble", [Reply(text=REWRITTEN, delay=3.0), Failure(status=529)])
async def test_a_slow_or_failing_rewrite_falls_back_to_the_offline_path(pipeline, emu, trouble):
    pipeline.rewriter.timeout = 0.3
    emu.when(is_rewrite, trouble)
    started = time.perf_counter()
    answer = await pipeline.answer(Question(text="does it work if we connected stripe?", history=HISTORY))
    assert time.perf_counter() - started < 2.5
    assert answer.search_query != REWRITTEN and "sepa" in answer.search_query.lower()  # the offline rewrite
    assert SEPA in [chunk.doc_url for chunk in answer.retrieved]
    assert rewrites(emu) and answer.text
