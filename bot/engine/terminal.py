"""An Answer as plain terminal text (the `ask` and `chat` commands, the demo). Pure.

Slack gets Block Kit from `bot/slack/blocks.py`; a terminal gets the same parts in the same
order: the answer, numbered sources, then how sure the bot is and why.
"""

from __future__ import annotations

import textwrap

from bot.engine.citations import numbered_sources
from bot.engine.types import Answer, Decision

DECISION_LABELS = {
    Decision.ANSWER: "answer",
    Decision.ANSWER_WITH_CAVEAT: "answer with a caveat",
    Decision.ESCALATE: "escalate to a human",
    Decision.CLARIFY: "ask for a question",
}


def sources_lines(answer: Answer) -> list[str]:
    return [f"  [{c.number}] {c.title} — {c.url}" for c in numbered_sources(answer.citations)]


def render_answer(answer: Answer, *, width: int = 100, details: bool = True) -> str:
    """Answer text, 'Sources', then decision, confidence, generator and reasons."""
    paragraphs = [
        "\n".join(
            textwrap.fill(line, width, subsequent_indent="  " if line.lstrip().startswith(("*", "-")) else "")
            if line.strip()
            else ""
            for line in block.split("\n")
        )
        for block in answer.text.split("\n\n")
    ]
    lines = ["\n\n".join(paragraphs)]
    sources = sources_lines(answer)
    if sources:
        lines += ["", "Sources:", *sources]
    if details:
        generator = answer.generator + (f" ({answer.model})" if answer.model else "")
        lines += [
            "",
            f"Decision: {DECISION_LABELS.get(answer.decision, answer.decision.value)} "
            f"(confidence {answer.confidence:.2f}) · generator: {generator}",
        ]
        if answer.fallback_reason:
            lines.append(f"Fallback: {answer.fallback_reason}")
        lines += [f"  - {reason}" for reason in answer.reasons]
        stages = ", ".join(f"{name} {ms:.0f} ms" for name, ms in answer.latency_ms.items())
        if stages:
            lines.append(
                f"Timing: {stages}" + (f" · cost ${answer.usage.cost_usd:.5f}" if answer.usage.cost_usd else "")
            )
    return "\n".join(lines)
