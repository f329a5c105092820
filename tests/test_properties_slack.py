"""Property tests for what the bot sends to Slack and what it reads from Slack.

Rendering (`bot/slack/blocks.py`): whatever Markdown the model or a help article produces, the
message fits Slack's limits (section text <= 3,000 characters, <= 50 blocks, no empty sections),
never pings a channel or a user group, and keeps its links. Reading (`bot/engine/normalise.py`):
whatever a user types, normalising never raises and leaves no raw `<@U…>` markup.
Derandomized, ~100 examples per property, no deadline: reproducible on a loaded CI box.
"""

from __future__ import annotations

import json
import re
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.engine.normalise import normalise_slack
from bot.engine.types import Answer, Citation, Decision
from bot.slack import blocks
from tests.emulators.slack_api import validate_message_blocks

PROPERTIES = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RAW_PING = re.compile(r"<!(?:channel|here|everyone|subteam\^)", re.IGNORECASE)
BARE_PING = re.compile(r"@(?:channel|here|everyone)\b", re.IGNORECASE)  # neutralised ones carry a word joiner
RAW_MENTION = re.compile(r"<@[UW][A-Z0-9]+")

# --------------------------------------------------------------------------- strategies

PINGS = st.sampled_from(
    [
        "<!here>",
        "<!channel>",
        "<!everyone>",
        "<!HERE>",
        "<!here|here>",
        "<!channel|@channel>",
        "@here",
        "@Channel",
        "@everyone",
        "<!subteam^S0123ABC>",
        "<!subteam^S0123ABC|@support-team>",
        "<!subteam^s1|x>",
    ]
)
MARKUP = st.sampled_from(
    [
        "**",
        "__",
        "*",
        "_",
        "~~",
        "`",
        "```",
        "\n",
        "\n\n",
        "# ",
        "### ",
        "- ",
        "* ",
        "> ",
        "---",
        "[",
        "]",
        "(",
        ")",
        "<",
        ">",
        "&",
        "|",
        "!",
        "[1]",
        "[12]",
        " ",
        "\t",
        "\r\n",
        "<https://evil.example|click>",
        "&lt;!here&gt;",
    ]
)
WORDS = st.one_of(
    st.sampled_from("Open Settings then Export. refund invoice 3 days $12.50 naïve 請求書 :wave: 👍".split()),
    st.text(string.ascii_letters + string.digits + string.punctuation + " éü—\n", min_size=1, max_size=15),
)
MARKDOWN = st.lists(st.one_of(WORDS, WORDS, WORDS, PINGS, MARKUP), max_size=120).map(" ".join)
# Answers long enough to need several sections and, at the top end, more than 50 blocks' worth.
LONG_MARKDOWN = st.one_of(
    MARKDOWN,
    st.tuples(MARKDOWN, st.integers(1, 60)).map(lambda pair: (pair[0] + "\n\n") * pair[1]),
    st.tuples(st.sampled_from(["word ", "x", "**bold** ", "<!here> ", "a\n"]), st.integers(2_000, 160_000)).map(
        lambda pair: pair[0] * (pair[1] // len(pair[0]))
    ),
)
SLUG = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12)
URLS = st.builds(
    lambda host, parts, anchor: f"https://{host}.example.com/" + "/".join(parts) + anchor,
    st.sampled_from(["help", "docs", "kb"]),
    st.lists(SLUG, min_size=1, max_size=4),
    st.sampled_from(["", "#setup", "?a=1&b=2"]),
)
LABELS = st.lists(st.text(string.ascii_letters + string.digits, min_size=1, max_size=8), min_size=1, max_size=4).map(
    " ".join
)
UNSAFE_URLS = ["javascript:alert(1)", "data:text/html,x", "file:///srv/kb/a.md", "/srv/kb/a.md", "vbscript:x"]
# Text around a link that cannot form Markdown syntax with it (brackets, code, emphasis).
PLAIN = st.lists(
    st.one_of(st.text(string.ascii_letters + string.digits + " .,:;?\n", max_size=20), PINGS), max_size=8
).map(" ".join)
CITATION_TEXT = st.one_of(st.text(max_size=80), PINGS, st.sampled_from(["a|b>c", "<!here> docs", "Title & more"]))
CITATIONS = st.lists(
    st.builds(
        lambda number, url, title, doc: Citation(number=number, doc_id=doc, url=url, title=title, cited_text=title),
        st.integers(1, 40),
        st.one_of(URLS, st.just(""), st.sampled_from(["https://x.example/a|b", "https://x.example/>"])),
        CITATION_TEXT,
        st.text(min_size=1, max_size=20),
    ),
    max_size=30,
)


def texts(payload) -> list[str]:
    """Every `text` string anywhere in a Block Kit payload."""
    found = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key == "text" and isinstance(value, str):
                found.append(value)
            else:
                found += texts(value)
    elif isinstance(payload, list):
        for item in payload:
            found += texts(item)
    return found


def assert_within_limits(message: list[dict]) -> None:
    validate_message_blocks(message)  # what the strict emulator (and Slack) would refuse, ~12k text included
    assert blocks.text_size(message) <= blocks.MESSAGE_TEXT_BUDGET
    assert len(message) <= blocks.MESSAGE_BLOCK_LIMIT
    for block in message:
        if block["type"] == "section":
            assert 0 < len(block["text"]["text"]) <= blocks.SECTION_LIMIT
        if block["type"] == "markdown":
            assert 0 < len(block["text"]) <= blocks.MARKDOWN_LIMIT
        if block["type"] == "context":
            assert all(0 < len(element["text"]) <= blocks.SECTION_LIMIT for element in block["elements"])


def stream_in_pieces(markdown: str, cuts: list[int]) -> str:
    """What a stream sends for `markdown` arriving in pieces of the sizes in `cuts` (then the rest)."""
    sanitizer, pieces, start = blocks.StreamSanitizer(), [], 0
    for size in cuts:
        pieces.append(markdown[start : start + size])
        start += size
    pieces.append(markdown[start:])
    return "".join(sanitizer.feed(piece) for piece in pieces) + sanitizer.flush()


def assert_no_pings(text: str) -> None:
    assert not RAW_PING.search(text), RAW_PING.search(text)
    assert not BARE_PING.search(text), BARE_PING.search(text)


def answer(text: str, citations=(), decision: Decision = Decision.ANSWER) -> Answer:
    return Answer(interaction_id="i-1", question="q", text=text, citations=list(citations), decision=decision)


# --------------------------------------------------------------------------- Markdown -> mrkdwn


@PROPERTIES
@given(MARKDOWN)
@example("ping <!here> and `<!channel>` and ```@everyone``` and <!subteam^S1|@oncall>")
def test_markdown_to_mrkdwn_never_pings(markdown):
    assert_no_pings(blocks.markdown_to_mrkdwn(markdown))


@PROPERTIES
@given(PLAIN, LABELS, URLS, PLAIN)
@example("see", "the docs", "https://docs.example.com/a?x=1&y=2", "now")
def test_markdown_links_survive_as_slack_links(before, label, url, after):
    rendered = blocks.markdown_to_mrkdwn(f"{before} [{label}]({url}) {after}")
    assert f"<{url}|{label}>" in rendered


# --------------------------------------------------------------------------- block builders


@PROPERTIES
@given(
    LONG_MARKDOWN,
    CITATIONS,
    st.sampled_from(list(Decision)),
    st.lists(st.one_of(PINGS, st.text(min_size=1, max_size=4000).filter(str.strip)), max_size=3),
)
def test_answer_blocks_fit_slack_and_keep_the_footer(markdown, citations, decision, notes):
    message = blocks.answer_blocks(answer(markdown, citations, decision), notes=notes)
    assert_within_limits(message)
    assert [block["type"] for block in message[-2:]] == ["context_actions", "actions"]  # never cut
    for text in texts(message):
        assert_no_pings(text)


@PROPERTIES
@given(st.lists(st.tuples(LABELS, URLS), min_size=1, max_size=40), st.integers(0, 3500), PLAIN)
def test_links_are_never_cut_between_sections(links, padding, filler):
    body = ("x " * (padding // 2)) + " ".join(f"{filler} [{label}]({url})" for label, url in links)
    message = blocks.answer_blocks(answer(body), markdown=False)  # the mrkdwn fallback
    assert_within_limits(message)
    sections = [block["text"]["text"] for block in message if block["type"] == "section"]
    if any("was too long" in text for text in texts(message)):
        return  # the body was cut at 50 blocks: later links are gone on purpose
    for label, url in links:
        assert any(f"<{url}|{label}>" in section for section in sections), (label, url)


@PROPERTIES
@given(
    MARKDOWN,
    st.one_of(st.none(), st.just("S0ONCALL")),
    st.one_of(st.none(), URLS),
    CITATIONS,
    st.sampled_from(list(Decision)),
)
def test_escalation_post_fits_and_pings_only_on_call(question, oncall, permalink, citations, decision):
    message = blocks.escalation_blocks(
        interaction_id="i-1",
        question_mrkdwn=question,
        asker="U0ASKER",
        permalink=permalink,
        answer=answer(question, citations, decision),
        trigger="the bot escalated",
        oncall_usergroup=oncall or "",
    )
    assert_within_limits(message)
    joined = json.dumps(texts(message))
    pings = re.findall(r"<!subteam\^[A-Za-z0-9]+", joined)
    assert pings == ([f"<!subteam^{oncall}"] if oncall else [])
    assert not re.search(r"<!(?:channel|here|everyone)", joined, re.IGNORECASE)


@PROPERTIES
@given(LONG_MARKDOWN)
def test_notices_fit_slack_and_never_ping(mrkdwn):
    message = blocks.notice_blocks(mrkdwn)
    assert_within_limits(message)
    for text in texts(message):
        assert_no_pings(text)
    assert blocks.fallback_text(mrkdwn) and len(blocks.fallback_text(mrkdwn)) <= blocks.FALLBACK_TEXT_LIMIT


@PROPERTIES
@given(
    st.lists(st.tuples(LABELS, st.one_of(URLS, st.sampled_from(UNSAFE_URLS))), min_size=1, max_size=40),
    st.integers(0, 14000),
    PLAIN,
)
def test_markdown_links_are_never_cut_and_only_safe_schemes_are_linked(links, padding, filler):
    """The `markdown` block: a cut never splits a `[label](url)`; only http, https and mailto
    targets survive as links (the rest keep their label)."""
    body = ("x " * (padding // 2)) + " ".join(f"{filler} [{label}]({url})" for label, url in links)
    message = blocks.answer_blocks(answer(body))
    assert_within_limits(message)
    text = "".join(block["text"] for block in message if block["type"] == "markdown")
    cut = any("was too long" in t for t in texts(message))
    for label, url in links:
        escaped = blocks.escape(url)  # `&amp;` in a link target is `&` to a Markdown reader
        assert f"]({escaped}" not in text or blocks.safe_url(url)
        if blocks.safe_url(url) and not cut:
            assert f"[{label}]({escaped})" in text, (label, url)
    for target in re.findall(r"\]\(([^)]*)\)", text):
        assert blocks.safe_url(target), target
    if cut:  # whatever was kept ends outside any link
        assert text.count("](") == len(re.findall(r"\]\([^)\s]*\)", text))


@PROPERTIES
@given(MARKDOWN, CITATIONS, st.lists(st.integers(1, 30), max_size=40))
def test_posted_and_streamed_answers_render_through_the_same_function(markdown, citations, cuts):
    """One rendering path: the posted `markdown` block is exactly what the stream sends, however it
    is split (citation markers linked on top), and neither ever pings."""
    streamed = stream_in_pieces(markdown, cuts)
    posted = blocks.answer_markdown(answer(markdown, citations))
    unlink = [c.model_copy(update={"url": None}) for c in citations]  # the same text, markers unlinked
    assert blocks.answer_markdown(answer(markdown, unlink)).replace(blocks.WORD_JOINER, "") == streamed.replace(
        blocks.WORD_JOINER, ""
    )
    for text in (posted, streamed):
        assert_no_pings(text)
        assert "<" not in text and ">" not in text  # no Slack markup: escaped as &lt; / &gt;
    message = blocks.answer_blocks(answer(markdown, citations))
    assert_within_limits(message)
    if posted.strip() and len(posted) < blocks.MESSAGE_TEXT_BUDGET // 2:
        assert [b["text"] for b in message if b["type"] == "markdown"] == [posted]


@PROPERTIES
@given(MARKDOWN, st.lists(st.integers(1, 30), max_size=40))
@example("hi <!here> and @channel", [4, 1, 1, 3, 2, 6])
def test_streamed_text_never_pings_however_it_is_split(markdown, cuts):
    streamed = stream_in_pieces(markdown, cuts)
    assert_no_pings(streamed)
    assert streamed.replace(blocks.WORD_JOINER, "") == blocks.safe_markdown(markdown).replace(blocks.WORD_JOINER, "")
    assert "<" not in streamed and ">" not in streamed  # no Slack markup survives in streamed text


# --------------------------------------------------------------------------- reading Slack text


MARKUP_TOKENS = st.sampled_from(
    [  # what Slack itself writes into a message's text
        "<@U0123ABC>",
        "<@U0123ABC|alice>",
        "<@W0XYZ>",
        "<#C0123|general>",
        "<#C0123>",
        "<!here>",
        "<!channel|channel>",
        "<!subteam^S0123|@team>",
        "<!date^1392734382^{date}|Feb 18>",
        "<https://x.example/a?b=1&amp;c=2|the docs>",
        "<https://x.example>",
        "<mailto:a@b.example|mail me>",
        ":wave:",
        "\n",
        "  ",
    ]
)
TYPED = st.one_of(  # what people type; Slack escapes &, < and > in it
    st.text(max_size=12),
    st.sampled_from(["a < b", "x > 3 & y", "<@", "@U0123ABC", "<#C1>", "<!here>", "&lt;", "<b>bold</b>", "|"]),
).map(lambda typed: typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
SLACK_TEXT = st.lists(st.one_of(MARKUP_TOKENS, TYPED.filter(lambda typed: "&lt;" not in typed)), max_size=40).map(
    "".join
)
ANY_TEXT = st.lists(
    st.one_of(
        MARKUP_TOKENS,
        st.text(max_size=10),
        st.sampled_from(["<", ">", "|", "<@", "<#", "<!", "U0123>", "&lt;", "&gt;", "&amp;"]),
    ),
    max_size=40,
).map("".join)


@PROPERTIES
@given(ANY_TEXT)
@example("<@U1|<@U2>>")
@example("<@U0BOT>")
def test_normalise_never_raises_on_any_text(text):
    assert isinstance(normalise_slack(text), str)


@PROPERTIES
@given(SLACK_TEXT)
@example("<@U0BOT> how do I export? cc <@U0123ABC|alice> <@W0XYZ>")
def test_normalise_spells_out_every_markup_mention(text):
    """Slack's own mention markup never survives (typed text with a `<` is the next property's)."""
    assert not RAW_MENTION.search(normalise_slack(text)), normalise_slack(text)


@PROPERTIES
@given(st.text(max_size=60))
@example("how do I tag <@U0123ABC> in a reply?")
@example("<!here> &lt; &amp;")
def test_typed_text_is_read_back_exactly_as_typed(typed):
    """What a person types (Slack escapes `&`, `<`, `>` in it) is decoded once, to the characters typed:
    no markup is invented from it, nothing is decoded twice; only whitespace is tidied."""
    escaped = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    tidy = "\n".join(" ".join(line.split()) for line in typed.replace("\r\n", "\n").split("\n")).strip()
    assert normalise_slack(escaped) == tidy


def test_a_typed_mention_stays_text_and_is_escaped_again_on_the_way_out():
    read = normalise_slack("how do I tag &lt;@U0123ABC&gt; in a reply?")
    assert read == "how do I tag <@U0123ABC> in a reply?"
    assert not RAW_MENTION.search(blocks.escape(read))
