"""Block Kit rendering: pure functions from engine objects to Slack payloads, no I/O.

Everything user-visible passes through here, so this is where Slack's limits are kept (3,000
characters per section, 50 blocks per message, and the undocumented ~12,000 characters of text
per message, link markup included: we stay under `MESSAGE_TEXT_BUDGET`) and where broadcast pings
are defused: an answer quoting `@here` or a `<!subteam^...>` from the knowledge must never page a
whole channel. The one deliberate ping, the on-call tag in an escalation post, is added by
`escalation_blocks` itself. Text is cut only between lines or words, never inside a code fence or
a `<…|…>` link; source lists drop whole lines. Only http, https and mailto URLs become links.

One rendering path for answers: the body of a posted answer is Slack's `markdown` block holding
`answer_markdown` (standard Markdown through `safe_markdown`), and a streamed answer sends each
piece through the same `safe_markdown`; the regex Markdown-to-mrkdwn converter is left for the
fallbacks (section blocks when Slack refuses the markdown block, the notification `text`) and
for notices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bot.engine.calibration import describe as describe_calibration
from bot.engine.freshness import freshness_label
from bot.engine.types import Answer, Citation, Decision
from knowledge.text import truncate

SECTION_LIMIT = 3000
MESSAGE_BLOCK_LIMIT = 50
# Slack refuses (msg_blocks_too_long) a message whose blocks hold more than about 12,000 characters
# of text; it is undocumented (bolt-js#2509, #2867), so we keep a margin below it.
MESSAGE_TEXT_BUDGET = 11_000
MARKDOWN_LIMIT = 12_000  # one `markdown` block's text, and all markdown blocks of a payload together
ESCALATION_QUESTION_CHARS = 1500  # the rest of a long question goes to the escalation post's thread
ESCALATION_DRAFT_CHARS = 6000
LINK_SCHEMES = ("http://", "https://", "mailto:")
FALLBACK_TEXT_LIMIT = 3000  # the notification / screen-reader text beside the blocks
WORD_JOINER = "\u2060"  # invisible; breaks "@here" so Slack does not read it as a ping

# Action ids: the listeners route clicks by these, the button values carry the interaction id.
FEEDBACK_ACTION = "answer_feedback"
FEEDBACK_UP_ACTION, FEEDBACK_DOWN_ACTION = "answer_feedback_up", "answer_feedback_down"  # plain-button fallback
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
CUT_NOTE = "_…the answer was too long for one message and was cut here._"
CONTINUED_NOTE = "_…continued in the thread below._"


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


def safe_url(url: str | None) -> bool:
    """Only web and mail links: `javascript:`, `data:`, `file://` and server paths never become links."""
    return url is not None and url.strip().lower().startswith(LINK_SCHEMES)


def link(url: str, label: str) -> str:
    """A Slack link; `|` and `>` would end it early, so they are escaped in both parts.
    A URL with any other scheme is not linked: the label is shown as plain text."""
    if not safe_url(url):
        return escape(label)
    clean = url.strip().replace("|", "%7C").replace(">", "%3E").replace("<", "%3C").replace(" ", "%20")
    return f"<{clean}|{escape(label).replace('|', '¦')}>"


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


def markdown_link(url: str, label: str) -> str:
    """A standard Markdown link, for the `markdown` block; the URL percent-encoded where it could
    end the link early. Other schemes than http, https and mailto give the label alone."""
    if not safe_url(url):
        return label
    clean = url.strip()
    for char, code in (("(", "%28"), (")", "%29"), (" ", "%20"), ("<", "%3C"), (">", "%3E")):
        clean = clean.replace(char, code)
    return f"[{label}]({clean})"


def link_citation_markers_markdown(markdown: str, citations: Iterable[Citation]) -> str:
    """`[1]` becomes a Markdown link to source 1 (the `markdown` block's counterpart of
    `link_citation_markers`); markers already inside a link are left alone."""
    urls = {citation.number: citation.url for citation in citations if citation.url}

    def to_link(match: re.Match) -> str:
        number = int(match.group(1))
        return markdown_link(urls[number], f"[{number}]") if number in urls else match.group(0)

    return re.sub(r"(?<![\[\w])\[(\d{1,3})\](?![(\]])", to_link, markdown)


_FENCED_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_ANGLE = re.compile(r"<[^<>\n]*>")
_MARKDOWN_LINK = re.compile(r"\[(?:[^\[\]\n]|\[[^\]\n]*\])*\]\([^)\s]*\)")
FENCE_MARK = "```"


def _protected(text: str) -> list[tuple[int, int]]:
    """Spans a cut must not fall inside: code fences, `<…>` links/mentions and `[…](…)` links."""
    return [m.span() for pattern in (_FENCED_BLOCK, _ANGLE, _MARKDOWN_LINK) for m in pattern.finditer(text)]


def _inside(position: int, spans: list[tuple[int, int]]) -> tuple[int, int] | None:
    return next(((start, end) for start, end in spans if start < position < end), None)


def safe_cut(text: str, limit: int) -> int:
    """Where to cut `text` so the first part has at most `limit` characters: the last paragraph,
    line or word break outside any code fence or `<…>`; else just before the span that crosses
    `limit`; else (one unbroken word) at `limit`."""
    if len(text) <= limit:
        return len(text)
    spans = _protected(text)
    for pattern, floor in (("\n\n", limit // 2), ("\n", limit // 2), (" ", limit // 4)):
        position = text.rfind(pattern, 0, limit + 1)
        while position > floor and _inside(position, spans):
            position = text.rfind(pattern, 0, position)
        if position > floor:
            return position
    crossing = _inside(limit, spans)
    if crossing and crossing[0] > 0:
        return crossing[0]
    return limit


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraph, line or word boundaries and never
    inside a `<…>` link. A code fence longer than a piece is closed and reopened at a line break."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = safe_cut(text, limit)
        fence = _inside(cut, [m.span() for m in _FENCED_BLOCK.finditer(text)]) if cut == limit else None
        if fence is not None or (cut == limit and text[:limit].count(FENCE_MARK) % 2):
            # a fence longer than the limit: cut it at a line break, close it, reopen it after
            room = limit - len(FENCE_MARK) - 1
            line = text.rfind("\n", 0, room)
            cut = line if line > room // 4 else room
            pieces.append(text[:cut].rstrip() + "\n" + FENCE_MARK)
            text = FENCE_MARK + "\n" + text[cut:].lstrip("\n")
            continue
        head = text[:cut].rstrip()
        if head:
            pieces.append(head)
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return pieces


def cut_to(text: str, budget: int) -> tuple[str, bool]:
    """At most `budget` characters of `text`, cut at a safe boundary (see `safe_cut`); and whether
    it was cut. A code fence left open by the cut is closed."""
    if len(text) <= budget:
        return text, False
    head = text[: safe_cut(text, max(budget - len(FENCE_MARK) - 1, 0))].rstrip()
    if head.count(FENCE_MARK) % 2:
        head += "\n" + FENCE_MARK
    return head, True


def text_size(payload: Any) -> int:
    """Characters of text in a Block Kit payload, as Slack counts toward its ~12,000 limit."""
    if isinstance(payload, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else text_size(v) for k, v in payload.items())
    if isinstance(payload, list):
        return sum(text_size(item) for item in payload)
    return 0


# --------------------------------------------------------------------------- blocks


def sections(mrkdwn: str) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}} for piece in split_text(mrkdwn)]


def context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(mrkdwn, SECTION_LIMIT)}]}


def button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    element = {
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id,
        "value": value,
    }
    if style:
        element["style"] = style
    return element


def sources_block(citations: Iterable[Citation], limit: int = SECTION_LIMIT) -> dict[str, Any] | None:
    """ "Sources" with one numbered link per marker number, in marker order."""
    by_number: dict[int, Citation] = {}
    for citation in citations:
        by_number.setdefault(citation.number, citation)
    if not by_number:
        return None
    lines = [
        neutralize_pings(
            f"{number}. {link(c.url, c.title or c.url) if safe_url(c.url) else escape(c.title or c.doc_id)}"
            + (f" · _{escape(label)}_" if (label := freshness_label(c)) else "")
        )
        for number, c in sorted(by_number.items())
    ]
    return context(fit_lines("*Sources*", lines, limit))


def fit_lines(title: str, lines: list[str], limit: int) -> str:
    """`title` and as many whole lines as fit in `limit` characters; the rest are counted, not cut."""
    kept: list[str] = []
    size = len(title)
    for index, line in enumerate(lines):
        more = f"\n…and {len(lines) - index} more" if index < len(lines) else ""
        if size + 1 + len(line) + (len(more) if index < len(lines) - 1 else 0) > limit:
            return "\n".join([title, *kept, truncate(more.strip(), limit - size - 1)])
        kept.append(line)
        size += 1 + len(line)
    return "\n".join([title, *kept])


def feedback_blocks(interaction_id: str, *, plain: bool = False) -> list[dict[str, Any]]:
    """👍/👎 as Slack's feedback buttons, plus the "Ask a human" button.

    `plain=True` is the fallback when Slack refuses `context_actions` on a message
    (`invalid_blocks`): the same three choices as ordinary buttons in one actions block.
    """
    if plain:
        return [
            {
                "type": "actions",
                "block_id": f"{FEEDBACK_BLOCK_PREFIX}{interaction_id}",
                "elements": [
                    button("👍", FEEDBACK_UP_ACTION, f"up:{interaction_id}"),
                    button("👎", FEEDBACK_DOWN_ACTION, f"down:{interaction_id}"),
                    button("Ask a human", ASK_HUMAN_ACTION, interaction_id),
                ],
            }
        ]
    thumbs = {
        "type": "context_actions",
        "block_id": f"{FEEDBACK_BLOCK_PREFIX}{interaction_id}",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "👍"},
                    "value": f"up:{interaction_id}",
                    "accessibility_label": "This answer helped",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "👎"},
                    "value": f"down:{interaction_id}",
                    "accessibility_label": "This answer did not help",
                },
            }
        ],
    }
    ask = {
        "type": "actions",
        "block_id": f"ask:{interaction_id}",
        "elements": [button("Ask a human", ASK_HUMAN_ACTION, interaction_id)],
    }
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
    """The answer as mrkdwn with linked citation markers: the `text` beside the blocks, and the
    body of the section fallback when Slack refuses the `markdown` block."""
    return link_citation_markers(markdown_to_mrkdwn(answer.text), answer.citations)


def answer_markdown(answer: Answer) -> str:
    """The answer as standard Markdown for Slack's `markdown` block: the text of `safe_markdown`
    (the very function each streamed piece goes through) with citation markers linked."""
    return link_citation_markers_markdown(safe_markdown(answer.text), answer.citations)


def answer_footer_blocks(
    answer: Answer, *, notes: Iterable[str] = (), plain_feedback: bool = False, sources_limit: int = SECTION_LIMIT
) -> list[dict[str, Any]]:
    """Everything below the answer text: caveat, notes, sources, feedback and "Ask a human"."""
    blocks: list[dict[str, Any]] = []
    if answer.decision is Decision.ANSWER_WITH_CAVEAT:
        blocks.append(context(CAVEAT_TEXT))
    blocks.extend(context(neutralize_pings(note)) for note in notes)
    if (sources := sources_block(answer.citations, sources_limit)) is not None:
        blocks.append(sources)
    blocks.extend(feedback_blocks(answer.interaction_id, plain=plain_feedback))
    return blocks


def fit_body(
    body_mrkdwn: str, head: list[dict[str, Any]], tail: list[dict[str, Any]], budget: int = MESSAGE_TEXT_BUDGET
) -> list[dict[str, Any]]:
    """`head` + the body as sections + `tail`, within `budget` characters of text and 50 blocks:
    the body is cut (at a safe boundary, with a note) before `head` or `tail` lose anything."""
    room_chars = budget - text_size(head) - text_size(tail)
    room_blocks = MESSAGE_BLOCK_LIMIT - len(head) - len(tail)
    body, cut = cut_to(body_mrkdwn, max(room_chars - len(CUT_NOTE) - 1, 0))
    pieces = sections(body) if body else []
    if len(pieces) > room_blocks - (1 if cut else 0):
        pieces, cut = pieces[: max(room_blocks - 1, 0)], True
    if cut:
        pieces.append(context(CUT_NOTE))
    return head + pieces + tail


def fit_markdown(
    body_markdown: str, tail: list[dict[str, Any]], budget: int = MESSAGE_TEXT_BUDGET
) -> list[dict[str, Any]]:
    """The body as one `markdown` block + `tail`, within `budget` characters of text in total and
    `MARKDOWN_LIMIT` for the block (Slack's limit for one markdown block and for all of a
    payload's together); the body is cut at a safe boundary, with a note, before `tail` loses anything."""
    room = min(budget - text_size(tail), MARKDOWN_LIMIT)
    body, cut = cut_to(body_markdown, max(room - len(CUT_NOTE) - 1, 0))
    pieces: list[dict[str, Any]] = [{"type": "markdown", "text": body}] if body.strip() else []
    if cut:
        pieces.append(context(CUT_NOTE))
    return pieces + tail


def answer_blocks(
    answer: Answer,
    *,
    notes: Iterable[str] = (),
    plain_feedback: bool = False,
    budget: int = MESSAGE_TEXT_BUDGET,
    markdown: bool = True,
) -> list[dict[str, Any]]:
    """The whole answer message within Slack's limits; the body is cut before the footer is ever
    dropped. The body is a `markdown` block (`answer_markdown`, what streaming sends too), or with
    `markdown=False`, mrkdwn sections (the fallback if Slack refuses the markdown block)."""
    notes = list(notes)
    footer = answer_footer_blocks(answer, notes=notes, plain_feedback=plain_feedback)
    if text_size(footer) > budget // 2:  # huge notes or source lists give way to the answer
        footer = answer_footer_blocks(
            answer, notes=[truncate(n, 500) for n in notes], plain_feedback=plain_feedback, sources_limit=1500
        )
    if markdown:
        return fit_markdown(answer_markdown(answer), footer, budget)
    return fit_body(answer_body(answer), [], footer, budget)


TRIMMED_BODY_CHARS = 2500


def answer_variants(answer: Answer, *, notes: Iterable[str] = ()) -> list[tuple[str, list[dict[str, Any]]]]:
    """The answer from richest to plainest, for the delivery chain: a `markdown` block with Slack's
    feedback buttons; the same with plain buttons (if `context_actions` is refused); mrkdwn
    sections (if the markdown block is refused); then a short version."""
    notes = list(notes)
    return [
        ("blocks", answer_blocks(answer, notes=notes)),
        ("degraded", answer_blocks(answer, notes=notes, plain_feedback=True)),
        ("sections", answer_blocks(answer, notes=notes, plain_feedback=True, markdown=False)),
        (
            "trimmed",
            answer_blocks(
                answer,
                notes=[truncate(n, 300) for n in notes],
                plain_feedback=True,
                budget=TRIMMED_BODY_CHARS + 1500,
                markdown=False,
            ),
        ),
    ]


def fallback_text(mrkdwn: str) -> str:
    """The `text` beside `blocks`: shown in notifications and read by screen readers."""
    return truncate(mrkdwn, FALLBACK_TEXT_LIMIT) or "(no text)"


def attachments_note(names: Iterable[str]) -> str | None:
    names = [escape(name) for name in names if name]
    return ATTACHMENTS_TEXT.format(names=", ".join(names)) if names else None


def notice_blocks(mrkdwn: str) -> list[dict[str, Any]]:
    return fit_body(neutralize_pings(mrkdwn), [], [])


def status_text(stats: dict[str, Any]) -> str:
    """`/kb-status`: what the index holds and when it last changed."""
    if not stats.get("exists"):
        return "The knowledge index is empty: an admin can run `/kb-refresh`."
    lines = [f"*Knowledge index*: {stats['documents']} documents, {stats['chunks']} chunks, version {stats['version']}"]
    last = stats.get("last_refresh") or {}
    if last:
        totals = last.get("totals") or {}
        counts = ", ".join(
            f"{name} {totals.get(name, 0)}" for name in ("added", "updated", "unchanged", "deleted", "failed")
        )
        lines.append(f"*Last refresh*: {escape(str(last.get('started_at') or 'unknown'))} ({counts})")
    if "calibration" in stats:
        lines.append(f"*Escalation*: {escape(describe_calibration(stats['calibration']))}")
    if stats.get("sources"):
        lines.append(
            "*Sources*: " + ", ".join(f"`{escape(display_source(source))}`" for source in stats["sources"][:20])
        )
    return neutralize_pings("\n".join(lines))


def display_source(source: str) -> str:
    """A source as users may see it: URLs whole, local paths by their last two parts only
    (a server's directory layout is nobody's business in Slack)."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE) and not source.lower().startswith("file:"):
        return source
    parts = [part for part in re.split(r"[\\/]+", source.removeprefix("file://")) if part and part != "."]
    return "/".join(parts[-2:]) or source


def refresh_text(summary: str, user: str, calibration: dict[str, Any] | None = None) -> str:
    text = f":books: Knowledge refreshed by <@{user}>: {escape(summary)}"
    return f"{text}\n{escape(describe_calibration(calibration))}" if calibration else text


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
    The post quotes the first ~1,500 characters of the question and ~6,000 of the draft (whole
    lines, never inside a link or code fence); `escalation_overflow` is the rest, for its thread.
    """
    tag = f"<!subteam^{oncall_usergroup}> " if oncall_usergroup else ""
    where = f" · {link(permalink, 'open thread')}" if permalink else ""
    who = f"<@{asker}>" if asker else "someone"
    question, question_cut = cut_to(neutralize_pings(question_mrkdwn), ESCALATION_QUESTION_CHARS)
    head: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": truncate(
                    f"{tag}:sos: *Question needs a human* ({escape(trigger)}) from {who}{where}", SECTION_LIMIT
                ),
            },
        },
        *sections("*Question*\n" + quote(question)),
    ]
    if question_cut:
        head.append(context(CONTINUED_NOTE))
    tail: list[dict[str, Any]] = []
    draft = ""
    if answer is not None:
        facts = f"*Confidence* {answer.confidence:.2f} · *Decision* {answer.decision.value}"
        if answer.reasons:
            facts += "\n*Reasons*\n" + "\n".join(f"• {escape(truncate(reason, 300))}" for reason in answer.reasons[:10])
        head.append(context(facts))
        if has_draft(answer):
            body, draft_cut = cut_to(answer_body(answer), ESCALATION_DRAFT_CHARS)
            draft = "*Draft answer*\n" + quote(body) + (f"\n{CONTINUED_NOTE}" if draft_cut else "")
        if (sources := sources_block(answer.citations, 1500)) is not None:
            tail.append(sources)
    if status_line:
        tail.append(context(status_line))
    if actions:
        tail.append(
            {
                "type": "actions",
                "block_id": f"escalation:{interaction_id}",
                "elements": [
                    button("Claim", CLAIM_ACTION, interaction_id, "primary"),
                    button("Resolve", RESOLVE_ACTION, interaction_id),
                ],
            }
        )
    return fit_body(draft, head, tail)


def escalation_overflow(question_mrkdwn: str, answer: Answer | None) -> list[str]:
    """What the escalation post left out (the question past ~1,500 characters, the draft past
    ~6,000), as mrkdwn messages for the post's thread; empty when everything fitted."""
    out = []
    question = neutralize_pings(question_mrkdwn)
    head, cut = cut_to(question, ESCALATION_QUESTION_CHARS)
    if cut:
        out.append("*Question (continued)*\n" + question[len(head.removesuffix(FENCE_MARK).rstrip()) :].lstrip())
    if answer is not None and has_draft(answer):
        body = answer_body(answer)
        head, cut = cut_to(body, ESCALATION_DRAFT_CHARS)
        if cut:
            out.append("*Draft answer (continued)*\n" + body[len(head.removesuffix(FENCE_MARK).rstrip()) :].lstrip())
    return out


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
            {
                "type": "input",
                "block_id": RESOLVE_BLOCK,
                "label": {"type": "plain_text", "text": "Answer for the asker"},
                "hint": {
                    "type": "plain_text",
                    "text": "Posted in the asker's thread and saved as the reference answer.",
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": RESOLVE_INPUT,
                    "multiline": True,
                    "max_length": SECTION_LIMIT,
                },
            },
        ],
    }


def refusal_modal(text: str) -> dict[str, Any]:
    """What the Resolve modal turns into when the clicker may not resolve (no submit button)."""
    return {
        "type": "modal",
        "callback_id": RESOLVE_VIEW + "_refused",
        "title": {"type": "plain_text", "text": "Resolve question"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": truncate(escape(text), SECTION_LIMIT)}}],
    }


def human_answer_blocks(human_answer: str, responder: str | None) -> list[dict[str, Any]]:
    who = f"<@{responder}>" if responder else "the support team"
    return notice_blocks(markdown_to_mrkdwn(human_answer))[: MESSAGE_BLOCK_LIMIT - 1] + [context(f"Answered by {who}")]


# --------------------------------------------------------------------------- streaming

_MD_LINK_TARGET = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")


def safe_markdown(text: str) -> str:
    """The engine's Markdown made safe for Slack, for the `markdown` block of a posted answer and
    for every streamed piece alike (one rendering path): pings defused, Slack's control characters
    escaped (so no `<@U…>`, `<!subteam^…>` or spoofed `<url|label>` survives), and Markdown links
    to anything but http, https or mailto reduced to their label."""
    text = _MD_LINK_TARGET.sub(lambda m: m.group(0) if safe_url(m.group(1)) else "]", text)
    return escape(neutralize_pings(text))


class StreamSanitizer:
    """Makes streamed text safe (see `safe_markdown`) even when a token is split across deltas.

    It holds back everything from the last `<` that has no `>` yet, however far back (a
    `<!channel|…>` label can be long), a trailing `@word` that could still become `@channel`,
    and an unfinished Markdown link target.
    """

    HOLD = 64  # how far back a trailing "@…" or "](…" is looked for

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        cut = len(text)
        bracket = text.rfind("<")
        if bracket != -1 and ">" not in text[bracket:]:
            cut = bracket
        tail = max(0, len(text) - self.HOLD)
        at = text.rfind("@", tail)
        if at != -1 and re.fullmatch(r"[A-Za-z]{0,8}", text[at + 1 :]):
            cut = min(cut, at)
        target = text.rfind("](")
        if target != -1 and ")" not in text[target:]:
            cut = min(cut, target)
        elif text.endswith("]"):
            cut = min(cut, len(text) - 1)
        self._pending = text[cut:]
        return safe_markdown(text[:cut])

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return safe_markdown(text)
