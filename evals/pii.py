"""Scrub personal data and secrets from text before it becomes an eval case reviewed in git.

Eval cases come from real Slack threads; anything committed to the repository must not name a
person, a channel or carry a credential. Each kind is replaced by a readable placeholder so the
question still makes sense to a reviewer ("email <EMAIL> about it").
Order matters: tokens and keys first (they may contain '@' or digits that look like phones),
then card numbers and IBANs (checksummed, so order numbers and long ids are left alone), then
IPv4 addresses, emails, bare Slack ids and @handles, and phones last.
"""

from __future__ import annotations

import re
from collections.abc import Callable

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # Slack tokens (bot, user, app, refresh, config) and webhook URLs.
    ("<SLACK_TOKEN>", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}|\bxapp-[A-Za-z0-9-]{8,}")),
    ("<SLACK_WEBHOOK>", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    # Anthropic, OpenAI-style, GitHub, AWS, Google and Stripe keys.
    (
        "<API_KEY>",
        re.compile(
            r"\bsk-ant-[A-Za-z0-9_-]{8,}|\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}"
            r"|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{30,}|\b[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}"
        ),
    ),
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
    (
        "<SECRET>",
        re.compile(
            r"(?<![A-Za-z0-9+/_.-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[a-z])(?=[A-Za-z0-9+/_-]*[A-Z])"
            r"[A-Za-z0-9+/_-]{32,}={0,2}"
        ),
    ),
    # Payment cards: 13-19 digits, optionally in groups, that pass the Luhn check (see CHECKS).
    ("<CARD>", re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])")),
    # IBANs: country, check digits, 11-30 letters/digits (optionally in groups of 4), mod-97 checked.
    ("<IBAN>", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")),
    (
        "<IP>",
        re.compile(
            r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])"
        ),
    ),
    # Bare Slack user ids (U…/W…, with a digit), as pasted outside of <@…> markup.
    ("<USER>", re.compile(r"\b[UW](?=[A-Z0-9]*\d)[A-Z0-9]{8,11}\b")),
    # @handles (after emails, which contain an @ too).
    ("<HANDLE>", re.compile(r"(?<![\w.@<])@[A-Za-z0-9][A-Za-z0-9._-]{1,79}\b")),
    # Phone numbers: 9-15 digits with the usual separators, optionally international.
    ("<PHONE>", re.compile(r"(?<![\w.])(?:\+|00)?\d(?:[\s().-]{0,2}\d){8,14}(?![\w.])")),
]


def luhn_ok(candidate: str) -> bool:
    """The Luhn checksum every payment card number satisfies (and most random numbers do not)."""
    digits = [int(c) for c in candidate if c.isdigit()]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return 13 <= len(digits) <= 19 and total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616 mod-97: the four first characters moved to the end, letters as 10..35."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# A match is only replaced if its check passes (others are left for the later patterns).
CHECKS: dict[str, Callable[[str], bool]] = {"<CARD>": luhn_ok, "<IBAN>": iban_ok}


def _checked(placeholder: str, check: Callable[[str], bool], matched: str) -> str:
    """The longest start of `matched`, cut at a separator, that passes `check`, replaced; the rest kept.
    A greedy match may swallow the next word ("GB82 WEST 1234 5698 7654 32 THEN"): the regex will not
    back off to the shorter, valid number, so the check does."""
    candidate = matched
    while candidate:
        if check(candidate):
            return placeholder + matched[len(candidate) :]
        cut = max(candidate.rfind(" "), candidate.rfind("-"))
        candidate = candidate[:cut].rstrip(" -") if cut > 0 else ""
    return matched


def _sub(placeholder: str, pattern: re.Pattern[str], text: str) -> str:
    check = CHECKS.get(placeholder)
    if check is None:
        return pattern.sub(placeholder, text)
    return pattern.sub(lambda m: _checked(placeholder, check, m.group(0)), text)


def scrub(text: str | None) -> str | None:
    """`text` with emails, phones, cards, IBANs, IPs, Slack ids and mentions, @handles, tokens,
    keys and long secrets replaced."""
    if not text:
        return text
    for placeholder, pattern in PATTERNS:
        text = _sub(placeholder, pattern, text)
    return text
