"""Slack message text -> the plain question the engine reasons about. Pure functions.

Slack sends mentions, channels and links in angle-bracket markup and escapes `&`, `<` and `>`;
left as is, `<@U123>` pollutes retrieval and `&amp;` never matches the knowledge.

Decoded once, at the Slack edge (`bot/slack`: the question and its thread history); the engine takes
the result as plain text and never decodes it again. So what a person typed stays what they typed:
a typed `<!here>` arrives as `&lt;!here&gt;` and is read as the text `<!here>`, not as a ping.
"""

from __future__ import annotations

import html
import re

MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
CHANNEL = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
SPECIAL = re.compile(r"<!([a-z^]+)([^>|]*)(?:\|([^>]*))?>")
LINK = re.compile(r"<((?:https?|mailto|tel):[^>|]+)(?:\|([^>]*))?>")
SHORTCODE = re.compile(r":[a-z0-9_+\-']+:")
LEADING_MENTIONS = re.compile(r"^(?:\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>(?:[\s,]|:(?=\s|$))*)+")  # "@bot: q", not ":wave:"


def _mention(match: re.Match[str]) -> str:
    return f"@{match.group(2)}" if match.group(2) else "@user"


def _channel(match: re.Match[str]) -> str:
    return f"#{match.group(2)}" if match.group(2) else "#channel"


def _special(match: re.Match[str]) -> str:
    kind, _, label = match.group(1), match.group(2), match.group(3)
    if label:
        return label if label.startswith("@") or kind.startswith("date") else f"@{label}"
    return f"@{kind}" if kind in ("here", "channel", "everyone") else ""


def _link(match: re.Match[str]) -> str:
    target, label = match.group(1), match.group(2)
    if target.startswith(("mailto:", "tel:")):
        return label or target.split(":", 1)[1]
    if not label or label == target:
        return target
    return f"{label} ({target})"


def normalise_slack(text: str) -> str:
    """Slack mrkdwn markup to plain text: the bot mention at the start goes, the rest is spelled out.

    Markup first, entities last: only Slack's own `<...>` is markup, and typed text (escaped by Slack)
    is decoded back to the characters typed, in one pass. Not idempotent by design: call it once."""
    text = LEADING_MENTIONS.sub("", text or "")
    text = MENTION.sub(_mention, text)
    text = CHANNEL.sub(_channel, text)
    text = SPECIAL.sub(_special, text)
    text = LINK.sub(_link, text)
    text = html.unescape(text)
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip()


def has_question(text: str) -> bool:
    """False for empty, emoji-only (`:wave:` or 👋) and punctuation-only messages."""
    stripped = SHORTCODE.sub(" ", text)
    stripped = re.sub(r"@user\b|@here\b|@channel\b|@everyone\b", " ", stripped)
    return any(char.isalnum() for char in stripped)
