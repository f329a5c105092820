"""An optional LLM judge of answer correctness (Claude grades an answer against the reference).

Token F1 and embedding cosine are cheap and deterministic but miss paraphrases and negations;
a judge catches those. It only runs when an Anthropic key is configured, and its score is
reported beside the deterministic ones (`correctness_judge`), never instead of them, so runs
with and without a key stay comparable. Its tokens are priced like the bot's and reported apart
(`usage.judge`): the eval's own cost is not the bot's cost per question. A judge call that fails
after the SDK's retries leaves that case ungraded (counted in `usage.judge.failed`), not the run dead.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.engine.types import Usage

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)

PROMPT = """You grade a support bot's answer against a reference answer written by a support expert.

Question: {question}

Reference answer: {reference}

Bot answer: {answer}

Does the bot answer agree with the reference on the facts that matter to the asker? Ignore style,
length and citation markers like [1]. Penalise contradictions and missing key facts.
Reply with one line: SCORE: <integer from 0 (wrong) to 100 (fully correct)>"""
SCORE = re.compile(r"SCORE:\s*(\d{1,3})", re.IGNORECASE)


@dataclass
class Grade:
    score: float | None  # 0..1; None when the judge failed or replied without a score
    usage: Usage = field(default_factory=Usage)
    error: str | None = None


def parse_score(text: str) -> float | None:
    match = SCORE.search(text or "")
    return min(100, int(match.group(1))) / 100 if match else None


def make_claude_judge(settings: Settings, client=None):
    """An async (question, reference, answer) -> Grade."""
    from anthropic import APIError, AsyncAnthropic

    from bot.engine.pricing import price_for, usage_from_api

    client = client or AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None,
        base_url=settings.anthropic_base_url,
        max_retries=settings.anthropic_max_retries,
        timeout=settings.anthropic_timeout_seconds,
    )

    price = price_for(settings.anthropic_model, settings.prices)

    async def judge(question: str, reference: str, answer: str) -> Grade:
        try:
            message = await client.messages.create(
                model=settings.anthropic_model,
                max_tokens=20,
                messages=[
                    {"role": "user", "content": PROMPT.format(question=question, reference=reference, answer=answer)}
                ],
            )
        except APIError as exc:
            log.warning("judge call failed: %s", type(exc).__name__)
            return Grade(None, error=type(exc).__name__)
        text = "".join(getattr(block, "text", "") for block in message.content)
        return Grade(parse_score(text), usage_from_api(message.usage, price))

    return judge
