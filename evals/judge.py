"""An optional LLM judge of answer correctness (Claude grades an answer against the reference).

Token F1 and embedding cosine are cheap and deterministic but miss paraphrases and negations;
a judge catches those. It only runs when an Anthropic key is configured, and its score is
reported beside the deterministic ones (`correctness_judge`), never instead of them, so runs
with and without a key stay comparable.
"""

from __future__ import annotations

import re

PROMPT = """You grade a support bot's answer against a reference answer written by a support expert.

Question: {question}

Reference answer: {reference}

Bot answer: {answer}

Does the bot answer agree with the reference on the facts that matter to the asker? Ignore style,
length and citation markers like [1]. Penalise contradictions and missing key facts.
Reply with one line: SCORE: <integer from 0 (wrong) to 100 (fully correct)>"""
SCORE = re.compile(r"SCORE:\s*(\d{1,3})", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    match = SCORE.search(text or "")
    return min(100, int(match.group(1))) / 100 if match else None


def make_claude_judge(settings, client=None):
    """An async (question, reference, answer) -> score in [0, 1] (None when unparsable)."""
    from anthropic import AsyncAnthropic

    client = client or AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(), base_url=settings.anthropic_base_url,
        max_retries=settings.anthropic_max_retries, timeout=settings.anthropic_timeout_seconds,
    )

    async def judge(question: str, reference: str, answer: str) -> float | None:
        message = await client.messages.create(
            model=settings.anthropic_model, max_tokens=20,
            messages=[{"role": "user", "content": PROMPT.format(question=question, reference=reference, answer=answer)}],
        )
        return parse_score("".join(getattr(block, "text", "") for block in message.content))

    return judge
