"""Block Kit rendering: pure functions from engine objects to Slack payloads, no I/O.

Everything user-visible passes through here, so this is where Slack's limits are kept (3,000
characters per section, 50 blocks per message) and where broadcast pings are defused: an answer
quoting `@here` or a `<!subteam^...>` from the knowledge must never page a whole channel. The one
deliberate ping, the on-call tag in an escalation post, is added by `escalation_blocks` itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bot.engine.types import Answer, Citation, Decision
from knowledge.text import truncate

SECTION_LIMIT = 3000
MESSAGE_BLOCK_LIMIT = 50
FALLBACK_TEXT_LIMIT = 3000  # the notification / screen-reader text beside the blocks
WORD_JOINER = "\u2060"  # invisible; breaks "@here" so Slack does not read it as a ping

# Action ids: the listeners route clicks by these, the button values carry the interaction id.
FEEDBACK_ACTION = "answer_feedback"
ASK_HUMAN_ACTION = "ask_human"
CLAIM_ACTION = "escalation_claim"
RESOLVE_ACTION = "escalation_resolve"
RESOLVE_VIEW = "escalation_resolve_view"
RESOLVE_BLOCK, RESOLVE_INPUT = "human_answer", "human_answer_input"
FEEDBACK_BLOCK_PREFIX = "feedback:"  # only answers carry it: marks a thread the bot answered

CAVEAT_TEXT = ":warning: I'm not fully sure about this one: please check the sources, or ask a human."
ESCALATED_TEXT = (
    "I couldn't find a confident answer in the knowledge base, so I've passed your question to the "
    "support team. A human will reply in this thread."
)
ASKED_HUMAN_TEXT = "I've asked the support team to take a look. A human will reply in this thread."
QUEUED_TEXT = "You're in the queue: lots of questions right now. I'll answer here in about {seconds} s."
ATTACHMENTS_TEXT = "I can't read attachments yet: {names}"
THANKS_UP = "Thanks for the feedback! Glad it helped."
THANKS_DOWN = "Thanks for the feedback: it helps us improve the answers."


# --------------------------------------------------------------------------- text

_BROADCAST = re.compile(r"<!(channel|here|everyone)(?:\|[^>]*)?>", re.IGNORECASE)
_SUBTEAM = re.compile(r"<!subteam\^[A-Za-z0-9]+(?:\|([^>]*))?>")
_BARE_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)


def neutralize_pings(text: str) -> str:
    """Turn broadcast and user-group pings in Slack-formatted text into inert look-alikes."""
    text = _BROADCAST.sub(lambda m: f"@{m.group(1)}", text)
    text = _SUBTEAM.sub(lambda m: m.group(1) or "@group", text)
    return _BARE_BROADCAST.sub(lambda m: f"@{WORD_JOINER}{m.group(1)}", text)


def escape(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str) -> str:
    """A Slack link; `|` and `>` would end it early, so they are escaped in both parts."""
    safe_url = url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C").replace(" ", "%20")
    return f"<{safe_url}|{escape(label).replace('|', '¦')}>"


_CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.DOTALL)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^\s*&gt;\s?(.*)$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]\n]+)\]\(\s*(<?)([^)\s>]+)\2(?:\s+\"[^\"]*\")?\s*\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_BOLD_MARK = "\x00B\x00"


def _inline(text: str) -> str:
    """Emphasis and links of one line of escaped Markdown (not code)."""
    links: list[str] = []

    def keep_link(match: re.Match) -> str:
        links.append(link(match.group(3).replace("&amp;", "&"), match.group(1)))
        return f"\x00L{len(links) - 1}\x00"

    text = _IMAGE_OR_LINK.sub(keep_link, text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC_STAR.sub(lambda m: f"_{m.group(1)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    text = text.replace(_BOLD_MARK, "*")
    return re.sub(r"\x00L(\d+)\x00", lambda m: links[int(m.group(1))], text)


def _convert_prose(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if heading := _HEADING.match(line):
            lines.append(f"*{_inline(heading.group(1)).strip('*')}*" if heading.group(1) else "")
        elif _RULE.match(line):
            lines.append("")
        elif bullet := _BULLET.match(line):
            indent = " " * (len(bullet.group(1).expandtabs(4)) // 2 * 4)
            lines.append(f"{indent}• {_inline(bullet.group(2))}")
        elif quote := _QUOTE.match(line):
            lines.append(f">{_inline(quote.group(1))}")
        else:
            lines.append(_inline(line))
    return "\n".join(lines)


def markdown_to_mrkdwn(markdown: str) -> str:
    """CommonMark-ish Markdown to Slack mrkdwn; code spans and blocks are kept verbatim."""
    parts = _CODE.split(markdown.replace("\r\n", "\n"))
    out = []
    for index, part in enumerate(parts):
        escaped = escape(part)
        out.append(escaped if index % 2 else _convert_prose(escaped))
    return neutralize_pings("".join(out)).strip()


def link_citation_markers(mrkdwn: str, citations: Iterable[Citation]) -> str:
    """`[1]` becomes a link to source 1, so a marker is one click from its evidence."""
    urls = {citation.number: citation.url for citation in citations if citation.url}

    def to_link(match: re.Match) -> str:
        number = int(match.group(1))
        return link(urls[number], f"[{number}]") if number in urls else match.group(0)

    return re.sub(r"(?<![<|\w])\[(\d{1,3})\](?![(|>])", to_link, mrkdwn)


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraph, line or word boundaries."""
    pieces = []
    while len(text) > limit:
        window = text[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"))
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return pieces


# --------------------------------------------------------------------------- blocks

def sections(mrkdwn: str) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}} for piece in split_text(mrkdwn)]


def context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(mrkdwn, SECTION_LIMIT)}]}


def button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    element = {"type": "button", "text": {"type": "plain_text", "text": text, "emoji": True},
               "action_id": action_id, "value": value}
    if style:
        element["style"] = style
    return element


def sources_block(citations: Iterable[Citation]) -> dict[str, Any] | None:
    """"Sources" with one numbered link per marker number, in marker order."""
    by_number: dict[int, Citation] = {}
    for citation in citations:
        by_number.setdefault(citation.number, citation)
    if not by_number:
        return None
    lines = [
        f"{number}. {link(c.url, c.title or c.url) if c.url else escape(c.title or c.doc_id)}"
        for number, c in sorted(by_number.items())
    ]
    return context(neutralize_pings("*Sources*\n" + "\n".join(lines)))


def feedback_blocks(interaction_id: str) -> list[dict[str, Any]]:
    """👍/👎 as Slack's feedback buttons, plus the "Ask a human" button."""
    thumbs = {
        "type": "context_actions",
        "block_id": f"{FEEDBACK_BLOCK_PREFIX}{interaction_id}",
        "elements": [{
            "type": "feedback_buttons",
            "action_id": FEEDBACK_ACTION,
            "positive_button": {"text": {"type": "plain_text", "text": "👍"}, "value": f"up:{interaction_id}",
                                "accessibility_label": "This answer helped"},
            "negative_button": {"text": {"type": "plain_text", "text": "👎"}, "value": f"down:{interaction_id}",
                                "accessibility_label": "This answer did not help"},
        }],
    }
    ask = {"type": "actions", "block_id": f"ask:{interaction_id}",
           "elements": [button("Ask a human", ASK_HUMAN_ACTION, interaction_id)]}
    return [thumbs, ask]


def parse_feedback_value(value: str) -> tuple[str, str]:
    """`"up:<interaction id>"` -> ("up", interaction id)."""
    rating, _, interaction_id = value.partition(":")
    if rating not in ("up", "down") or not interaction_id:
        raise ValueError(f"not a feedback value: {value!r}")
    return rating, interaction_id


def has_draft(answer: Answer) -> bool:
    """False for the engine's canned replies (asked for a human, search unavailable): not a draft."""
    return answer.generator != "none" and bool(answer.text.strip())


def answer_body(answer: Answer) -> str:
    """The answer as mrkdwn with linked citation markers."""
    return link_citation_markers(markdown_to_mrkdwn(answer.text), answer.citations)


def answer_footer_blocks(answer: Answer, *, notes: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Everything below the answer text: caveat, notes, sources, feedback and "Ask a human"."""
    blocks: list[dict[str, Any]] = []
    if answer.decision is Decision.ANSWER_WITH_CAVEAT:
        blocks.append(context(CAVEAT_TEXT))
    blocks.extend(context(neutralize_pings(note)) for note in notes)
    if (sources := sources_block(answer.citations)) is not None:
        blocks.append(sources)
    blocks.extend(feedback_blocks(answer.interaction_id))
    return blocks


def answer_blocks(answer: Answer, *, notes: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The whole answer message; the body is cut before the footer is ever dropped."""
    footer = answer_footer_blocks(answer, notes=notes)
    body = sections(answer_body(answer))
    room = MESSAGE_BLOCK_LIMIT - len(footer)
    if len(body) > room:
        body = body[: room - 1] + [context("_…the answer was too long for one message and was cut here._")]
    return body + footer


def fallback_text(mrkdwn: str) -> str:
    """The `text` beside `blocks`: shown in notifications and read by screen readers."""
    return truncate(mrkdwn, FALLBACK_TEXT_LIMIT) or "(no text)"


def attachments_note(names: Iterable[str]) -> str | None:
    names = [escape(name) for name in names if name]
    return ATTACHMENTS_TEXT.format(names=", ".join(names)) if names else None


def notice_blocks(mrkdwn: str) -> list[dict[str, Any]]:
    return sections(neutralize_pings(mrkdwn))[:MESSAGE_BLOCK_LIMIT]


def status_text(stats: dict[str, Any]) -> str:
    """`/kb-status`: what the index holds and when it last changed."""
    if not stats.get("exists"):
        return "The knowledge index is empty: an admin can run `/kb-refresh`."
    lines = [f"*Knowledge index*: {stats['documents']} documents, {stats['chunks']} chunks, version {stats['version']}"]
    last = stats.get("last_refresh") or {}
    if last:
        totals = last.get("totals") or {}
        counts = ", ".join(f"{name} {totals.get(name, 0)}" for name in ("added", "updated", "unchanged", "deleted", "failed"))
        lines.append(f"*Last refresh*: {escape(str(last.get('started_at') or 'unknown'))} ({counts})")
    if stats.get("sources"):
        lines.append("*Sources*: " + ", ".join(f"`{escape(source)}`" for source in stats["sources"][:20]))
    return neutralize_pings("\n".join(lines))


def refresh_text(summary: str, user: str) -> str:
    return f":books: Knowledge refreshed by <@{user}>: {escape(summary)}"


# --------------------------------------------------------------------------- escalation

def escalation_blocks(
    *,
    interaction_id: str,
    question_mrkdwn: str,
    asker: str | None,
    permalink: str | None,
    answer: Answer | None,
    trigger: str,
    oncall_usergroup: str = "",
    status_line: str | None = None,
    actions: bool = True,
) -> list[dict[str, Any]]:
    """The escalation channel post: who asked what, where, the draft answer, and why it's here.

    `question_mrkdwn` is the asker's Slack text; the on-call tag is the only ping that survives.
    """
    tag = f"<!subteam^{oncall_usergroup}> " if oncall_usergroup else ""
    where = f" · {link(permalink, 'open thread')}" if permalink else ""
    who = f"<@{asker}>" if asker else "someone"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(
            f"{tag}:sos: *Question needs a human* ({escape(trigger)}) from {who}{where}", SECTION_LIMIT)}},
        *sections("*Question*\n" + quote(neutralize_pings(question_mrkdwn)))[:4],
    ]
    if answer is not None:
        facts = f"*Confidence* {answer.confidence:.2f} · *Decision* {answer.decision.value}"
        if answer.reasons:
            facts += "\n*Reasons*\n" + "\n".join(f"• {escape(reason)}" for reason in answer.reasons[:10])
        blocks.append(context(facts))
        if has_draft(answer):
            blocks.extend(sections("*Draft answer*\n" + quote(answer_body(answer)))[:20])
        if (sources := sources_block(answer.citations)) is not None:
            blocks.append(sources)
    if status_line:
        blocks.append(context(status_line))
    if actions:
        blocks.append({"type": "actions", "block_id": f"escalation:{interaction_id}", "elements": [
            button("Claim", CLAIM_ACTION, interaction_id, "primary"),
            button("Resolve", RESOLVE_ACTION, interaction_id),
        ]})
    return blocks[:MESSAGE_BLOCK_LIMIT]


def quote(mrkdwn: str) -> str:
    return "\n".join(f">{line}" for line in mrkdwn.split("\n"))


def resolve_modal(interaction_id: str, private_metadata: str) -> dict[str, Any]:
    """The "Resolve" modal: the human answer, relayed to the asker and kept as the reference."""
    return {
        "type": "modal",
        "callback_id": RESOLVE_VIEW,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Resolve question"},
        "submit": {"type": "plain_text", "text": "Send answer"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "input", "block_id": RESOLVE_BLOCK,
             "label": {"type": "plain_text", "text": "Answer for the asker"},
             "hint": {"type": "plain_text", "text": "Posted in the asker's thread and saved as the reference answer."},
             "element": {"type": "plain_text_input", "action_id": RESOLVE_INPUT, "multiline": True,
                         "max_length": SECTION_LIMIT}},
        ],
    }


def human_answer_blocks(human_answer: str, responder: str | None) -> list[dict[str, Any]]:
    who = f"<@{responder}>" if responder else "the support team"
    return notice_blocks(markdown_to_mrkdwn(human_answer))[: MESSAGE_BLOCK_LIMIT - 1] + [
        context(f"Answered by {who}")
    ]


# --------------------------------------------------------------------------- streaming

class StreamSanitizer:
    """Defuses pings in streamed Markdown even when a token is split across two deltas.

    It holds back a short tail that could still grow into `<!here>` or `@channel`.
    """

    HOLD = 64  # longer than any ping token worth holding back for

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        tail = max(0, len(text) - self.HOLD)
        cut = len(text)
        bracket = text.rfind("<", tail)
        if bracket != -1 and ">" not in text[bracket:]:
            cut = bracket
        at = text.rfind("@", tail)
        if at != -1 and re.fullmatch(r"[A-Za-z]{0,8}", text[at + 1:]):
            cut = min(cut, at)
        self._pending = text[cut:]
        return neutralize_pings(text[:cut])

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return neutralize_pings(text)
