"""Scrub personal data and secrets from text before it becomes an eval case reviewed in git.

Eval cases come from real Slack threads; anything committed to the repository must not name a
person, a channel or carry a credential. Each kind is replaced by a readable placeholder so the
question still makes sense to a reviewer ("email <EMAIL> about it").
Order matters: tokens and keys first (they may contain '@' or digits that look like phones).
"""

from __future__ import annotations

import re

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # Slack tokens (bot, user, app, refresh, config) and webhook URLs.
    ("<SLACK_TOKEN>", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}|\bxapp-[A-Za-z0-9-]{8,}")),
    ("<SLACK_WEBHOOK>", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    # Anthropic, OpenAI-style, GitHub, AWS, Google and Stripe keys.
    ("<API_KEY>", re.compile(
        r"\bsk-ant-[A-Za-z0-9_-]{8,}|\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}"
        r"|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{30,}|\b[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}"
    )),
    ("<TOKEN>", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}")),
    ("<JWT>", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    # Slack mentions: users, channels (with or without a label), user groups and special mentions.
    ("<USER>", re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")),
    ("<CHANNEL>", re.compile(r"<#C[A-Z0-9]+(?:\|[^>]*)?>")),
    ("<GROUP>", re.compile(r"<!subteam\^[A-Z0-9]+(?:\|[^>]*)?>")),
    ("<EMAIL>", re.compile(r"<mailto:[^>|]+(?:\|[^>]*)?>|\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    # Long hex (>= 32) or base64-ish runs (>= 32, with digits, lower and upper case): hashes, secrets.
    # A run may not start inside a url or a dotted name, so paths like /claude-3-5-sonnet survive.
    ("<SECRET>", re.compile(r"\b[0-9a-fA-F]{32,}\b")),
    ("<SECRET>", re.compile(
        r"(?<![A-Za-z0-9+/_.-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[a-z])(?=[A-Za-z0-9+/_-]*[A-Z])"
        r"[A-Za-z0-9+/_-]{32,}={0,2}"
    )),
    # Phone numbers: 9-15 digits with the usual separators, optionally international.
    ("<PHONE>", re.compile(r"(?<![\w.])(?:\+|00)?\d(?:[\s().-]{0,2}\d){8,14}(?![\w.])")),
]


def scrub(text: str | None) -> str | None:
    """`text` with emails, phones, Slack mentions, tokens, keys and long secrets replaced."""
    if not text:
        return text
    for placeholder, pattern in PATTERNS:
        text = pattern.sub(placeholder, text)
    return text
