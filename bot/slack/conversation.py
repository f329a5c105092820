"""Slack messages in, engine vocabulary out: thread history, attachments, who is talking.

Slack markup becomes plain text through the engine's own `normalise_slack`, so a question and
its thread history read the same way. The bot's earlier replies in a thread become "assistant"
turns, so a follow-up such as "and on Android?" is read in context; the pages an answer listed
under "Sources" travel with its turn, as the engine's prior for the next question.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bot.engine.normalise import MENTION, normalise_slack
from bot.engine.types import Turn
from bot.slack.blocks import FEEDBACK_BLOCK_PREFIX

HISTORY_TURNS = 10
SOURCES_HEADING = "*Sources*"  # the context block `blocks.sources_block` renders under an answer
SLACK_LINK = re.compile(r"<(https?://[^|>\s]+)(?:\|[^>]*)?>")
# Message subtypes that are still a person talking; every other subtype (edits, joins, bots) is not.
HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast"}


def mentions(text: str, user_id: str | None) -> bool:
    return bool(user_id) and any(m.group(1) == user_id for m in MENTION.finditer(text or ""))


def is_from_a_person(event: dict[str, Any]) -> bool:
    """False for bots (this one included), edits, deletions, joins and other system messages."""
    return not event.get("bot_id") and event.get("subtype") in HUMAN_SUBTYPES and bool(event.get("user"))


def attachment_names(event: dict[str, Any]) -> list[str]:
    return [f.get("name") or f.get("title") or "a file" for f in event.get("files") or []]


def is_bot_message(message: dict[str, Any], bot_user_id: str | None, bot_id: str | None) -> bool:
    return bool((bot_id and message.get("bot_id") == bot_id) or (bot_user_id and message.get("user") == bot_user_id))


def cited_urls(message: dict[str, Any]) -> list[str]:
    """The urls in the "Sources" block of one of the bot's answers, in order."""
    urls: list[str] = []
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [] if block.get("type") == "context" else []:
            text = element.get("text") if isinstance(element, dict) else None
            if isinstance(text, str) and text.startswith(SOURCES_HEADING):
                urls.extend(match.group(1) for match in SLACK_LINK.finditer(text))
    return list(dict.fromkeys(urls))


def thread_history(
    messages: Iterable[dict[str, Any]],
    *,
    before_ts: str,
    bot_user_id: str | None,
    bot_id: str | None,
    limit: int = HISTORY_TURNS,
) -> list[Turn]:
    """The last `limit` turns of a thread before the message being answered, oldest first."""
    turns = []
    for message in messages:
        if float(message.get("ts", 0)) >= float(before_ts):
            continue
        mine = is_bot_message(message, bot_user_id, bot_id)
        if not mine and not is_from_a_person(message):
            continue
        text = normalise_slack(message.get("text", ""))
        if text:
            turns.append(
                Turn(role="assistant" if mine else "user", text=text, sources=cited_urls(message) if mine else [])
            )
    return turns[-limit:]


_ACKNOWLEDGEMENT = re.compile(
    r"^\W*(thanks?( you)?|thx|ty|cheers|ok(ay)?|great|perfect|cool|got it|nice|awesome|:[a-z0-9_+-]+:)\W*$",
    re.IGNORECASE,
)


def is_acknowledgement(text: str) -> bool:
    """ "thanks!" in a thread the bot answered is not a new question."""
    return bool(_ACKNOWLEDGEMENT.match(normalise_slack(text)))


def is_answer(message: dict[str, Any]) -> bool:
    """A finished answer of the bot's: it carries the feedback block (hand-offs and notices do not)."""
    return bool(feedback_interactions(message))


def replies_to_asker(
    messages: Iterable[dict[str, Any]],
    *,
    after_ts: str,
    asker: str,
    bot_user_id: str | None,
    bot_id: str | None,
) -> list[dict[str, Any]]:
    """The bot's messages addressed to `asker` (a streamed reply names its recipient) after their
    question at `after_ts` and before they spoke again, oldest first: where a reply a dead process
    left for that question can be, with other questions' replies of the same asker (the caller
    tells them apart). A reply posted whole names no recipient and is never among them."""
    found = []
    for message in sorted(messages, key=lambda m: float(m.get("ts", 0))):
        if float(message.get("ts", 0)) <= float(after_ts):
            continue
        if is_bot_message(message, bot_user_id, bot_id):
            if message.get("recipient_user_id") == asker:
                found.append(message)
        elif is_from_a_person(message) and message.get("user") == asker:
            break
    return found


def feedback_interactions(message: dict[str, Any]) -> list[str]:
    """The interaction ids an answer's feedback blocks name (`feedback:<interaction id>`)."""
    return [
        str(block["block_id"])[len(FEEDBACK_BLOCK_PREFIX) :]
        for block in message.get("blocks") or []
        if str(block.get("block_id", "")).startswith(FEEDBACK_BLOCK_PREFIX)
    ]


def is_cut_stream(message: dict[str, Any]) -> bool:
    """A streamed reply never finished: text only. Every outcome the bot writes (an answer, a
    hand-off, a notice) carries blocks."""
    return not message.get("blocks")


def bot_answered(messages: list[dict[str, Any]], user: str, bot_user_id: str | None, bot_id: str | None) -> bool:
    """Whether the bot's latest message in this thread is an answer (not a hand-off to humans)
    and `user` spoke in the thread before it: then their next message is a follow-up."""
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if is_bot_message(message, bot_user_id, bot_id):
            return is_answer(message) and any(earlier.get("user") == user for earlier in messages[:position])
    return False
