"""Rendered size against Slack's limits: answers and escalations of growing length, as posted.

Prints one row per case: input characters, blocks, total block text (what Slack counts toward its
~12,000-character limit), whether the strict emulator's validator accepts it, and the render time.

    python -m benchmarks.slack_limits
"""

from __future__ import annotations

import time

from bot.engine.types import Answer, Citation, Decision
from bot.slack import blocks
from tests.emulators.slack_api import BlockKitError, validate_message_blocks

URL = "https://help.example.com/articles/" + "a-fairly-long-article-slug-" * 3


def answer_text(chars: int) -> str:
    sentences = (f"Step {n} is described in the guide [{n % 9 + 1}]." for n in range(10**6))
    out, size = [], 0
    for sentence in sentences:
        if size >= chars:
            break
        out.append(sentence)
        size += len(sentence) + 1
        if len(out) % 8 == 0:
            out.append("\n\n")
    return " ".join(out)[:chars]


def check(message) -> str:
    try:
        validate_message_blocks(message)
        return "ok"
    except BlockKitError as exc:
        return exc.error


def main() -> None:
    citations = [
        Citation(number=n, doc_id=f"d{n}", url=f"{URL}{n}", title=f"Article {n}", cited_text="x") for n in range(1, 10)
    ]
    rows = []
    for chars in (1_000, 3_000, 7_000, 12_000, 30_000, 120_000):
        answer = Answer(
            interaction_id="i", question="q", text=answer_text(chars), citations=citations, decision=Decision.ANSWER
        )
        started = time.perf_counter()
        message = blocks.answer_blocks(answer)
        elapsed = (time.perf_counter() - started) * 1000
        rows.append(("answer", chars, len(message), blocks.text_size(message), check(message), elapsed))
    for chars in (2_000, 8_000, 30_000):
        log = "\n".join(
            f"2026-11-30T10:00:{n % 60:02d}Z ERROR worker-{n} failed: connection reset by peer"
            for n in range(chars // 60)
        )[:chars]
        draft = Answer(
            interaction_id="i", question="q", text=answer_text(chars), citations=citations, decision=Decision.ESCALATE
        )
        started = time.perf_counter()
        message = blocks.escalation_blocks(
            interaction_id="i",
            question_mrkdwn=blocks.escape(log),
            asker="U1",
            permalink="https://x.example/p",
            answer=draft,
            trigger="low confidence",
            oncall_usergroup="S0ONCALL",
        )
        overflow = blocks.escalation_overflow(blocks.escape(log), draft)
        elapsed = (time.perf_counter() - started) * 1000
        rows.append(
            (
                f"escalation (+{len(overflow)} thread replies)",
                chars,
                len(message),
                blocks.text_size(message),
                check(message),
                elapsed,
            )
        )
    print(f"{'message':34} {'input chars':>11} {'blocks':>6} {'block text':>10} {'Slack':>6} {'render ms':>9}")
    for kind, chars, count, size, verdict, elapsed in rows:
        print(f"{kind:34} {chars:>11,} {count:>6} {size:>10,} {verdict:>6} {elapsed:>9.1f}")


if __name__ == "__main__":
    main()
