"""Block Kit rendering (pure): mrkdwn conversion, ping neutralisation, limits, sources numbering."""

from __future__ import annotations

import json

import pytest

from bot.engine.types import Answer, Citation, Decision
from bot.slack import blocks
from bot.slack.blocks import (
    StreamSanitizer,
    answer_blocks,
    escalation_blocks,
    markdown_to_mrkdwn,
    neutralize_pings,
    parse_feedback_value,
)
from bot.slack.conversation import (
    bot_answered,
    feedback_interactions,
    is_acknowledgement,
    is_answer,
    is_cut_stream,
    replies_to_asker,
    thread_history,
)


def make_answer(text="Reset it in *Settings* [1] and confirm by email [2].", decision=Decision.ANSWER, citations=None):
    citations = (
        citations
        if citations is not None
        else [
            Citation(number=1, doc_id="a", url="https://kb.test/reset", title="Reset your password", cited_text="x"),
            Citation(number=2, doc_id="b", url="https://kb.test/email", title="Email & alerts", cited_text="y"),
        ]
    )
    return Answer(
        interaction_id="iid1", question="q", text=text, citations=citations, confidence=0.8, decision=decision
    )


def all_text(payload) -> str:
    return json.dumps(payload, ensure_ascii=False)


@pytest.mark.parametrize(
    "markdown, expected",
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~gone~~", "~gone~"),
        ("# Title\n## Sub", "*Title*\n*Sub*"),
        ("[the guide](https://kb.test/a?b=1&c=2)", "<https://kb.test/a?b=1&c=2|the guide>"),
        ("![diagram](https://kb.test/d.png)", "<https://kb.test/d.png|diagram>"),
        ("- one\n* two\n  - nested", "• one\n• two\n    • nested"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("> quoted", ">quoted"),
        ("`**code**` stays", "`**code**` stays"),
        ("```\n# not a heading\n**x**\n```", "```\n# not a heading\n**x**\n```"),
    ],
)
def test_markdown_to_mrkdwn(markdown, expected):
    assert markdown_to_mrkdwn(markdown) == expected


@pytest.mark.parametrize(
    "text",
    [
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<!here|@here>",
        "@here",
        "@channel",
        "@everyone",
        "<!subteam^S0123|@oncall>",
        "<!subteam^S0123>",
    ],
)
def test_pings_are_neutralised(text):
    for out in (neutralize_pings(f"hey {text} look"), all_text(answer_blocks(make_answer(text=f"hey {text} look")))):
        assert "<!" not in out and not any(f"@{word}" in out for word in ("here", "channel", "everyone"))


def test_answer_blocks_sources_markers_and_feedback():
    rendered = answer_blocks(make_answer())
    assert rendered[0]["type"] == "markdown"  # standard Markdown, rendered by Slack (as streaming is)
    body = rendered[0]["text"]
    assert "[[1]](https://kb.test/reset)" in body and "[[2]](https://kb.test/email)" in body and "*Settings*" in body
    sections = answer_blocks(make_answer(), markdown=False)  # the fallback when the markdown block is refused
    body = sections[0]["text"]["text"]
    assert "<https://kb.test/reset|[1]>" in body and "<https://kb.test/email|[2]>" in body and "_Settings_" in body
    sources = next(b for b in rendered if b["type"] == "context" and "Sources" in b["elements"][0]["text"])
    text = sources["elements"][0]["text"]
    assert text.index("1. <https://kb.test/reset|Reset your password>") < text.index(
        "2. <https://kb.test/email|Email &amp; alerts>"
    )
    feedback = next(b for b in rendered if b["type"] == "context_actions")
    element = feedback["elements"][0]
    assert element["type"] == "feedback_buttons" and element["action_id"] == blocks.FEEDBACK_ACTION
    assert parse_feedback_value(element["positive_button"]["value"]) == ("up", "iid1")
    assert parse_feedback_value(element["negative_button"]["value"]) == ("down", "iid1")
    ask = next(b for b in rendered if b["type"] == "actions")
    assert ask["elements"][0]["action_id"] == blocks.ASK_HUMAN_ACTION and ask["elements"][0]["value"] == "iid1"
    assert blocks.CAVEAT_TEXT not in all_text(rendered)


def test_sources_follow_marker_numbers_not_list_order():
    citations = [
        Citation(number=3, doc_id="c", url="https://kb.test/c", title="C", cited_text=""),
        Citation(number=1, doc_id="a", url="https://kb.test/a", title="A", cited_text=""),
        Citation(number=1, doc_id="a", url="https://kb.test/a", title="A", cited_text="second span"),
    ]
    text = blocks.sources_block(citations)["elements"][0]["text"]
    assert text == "*Sources*\n1. <https://kb.test/a|A>\n3. <https://kb.test/c|C>"
    assert blocks.sources_block([]) is None


def test_caveat_line_only_for_answer_with_caveat():
    assert blocks.CAVEAT_TEXT in all_text(answer_blocks(make_answer(decision=Decision.ANSWER_WITH_CAVEAT)))


def test_limits_sections_and_block_count():
    long_text = "\n\n".join(f"Paragraph {n}: " + "word " * 400 for n in range(60))  # ~120k characters
    rendered = answer_blocks(make_answer(text=long_text))
    assert len(rendered) <= blocks.MESSAGE_BLOCK_LIMIT
    # Slack refuses more than ~12,000 characters of block text in one message: 120k cannot "fit"
    assert blocks.text_size(rendered) <= blocks.MESSAGE_TEXT_BUDGET and "was too long" in all_text(rendered)
    assert all(len(b["text"]["text"]) <= blocks.SECTION_LIMIT for b in rendered if b["type"] == "section")
    assert rendered[-1]["type"] == "actions" and any(b["type"] == "context_actions" for b in rendered)
    one_line = "x" * 7000  # no break at all: hard cut
    assert [len(p) for p in blocks.split_text(one_line)] == [3000, 3000, 1000]


def test_escalation_blocks_keep_only_the_oncall_ping():
    post = escalation_blocks(
        interaction_id="iid1",
        question_mrkdwn="help <!channel> me",
        asker="U1",
        permalink="https://x/p",
        answer=make_answer(text="maybe @here [1]"),
        trigger="low confidence",
        oncall_usergroup="S0ONCALL",
    )
    text = all_text(post)
    assert text.count("<!subteam^S0ONCALL>") == 1 and "<!channel>" not in text and "@here" not in text
    assert "<https://x/p|open thread>" in text and "<@U1>" in text and "0.80" in text
    actions = post[-1]["elements"]
    assert [a["action_id"] for a in actions] == [blocks.CLAIM_ACTION, blocks.RESOLVE_ACTION]
    assert all(a["value"] == "iid1" for a in actions)


def test_stream_sanitizer_catches_pings_split_across_deltas():
    sanitizer = StreamSanitizer()
    pieces = ["Hello <!", "here> and @ch", "annel, mail a@b.c ", "<!subteam^S1|@ops", "> done"]
    out = "".join(sanitizer.feed(p) for p in pieces) + sanitizer.flush()
    assert "<!" not in out and "@here" not in out and "@channel" not in out
    assert out.replace(blocks.WORD_JOINER, "") == "Hello @here and @channel, mail a@b.c @ops done"


def test_thanks_is_not_a_follow_up_question():
    assert is_acknowledgement("Thanks!") and is_acknowledgement(":+1:") and not is_acknowledgement("thanks, but why?")


def test_thread_history_and_followup_detection():
    answer_msg = {
        "ts": "2.0",
        "bot_id": "B1",
        "user": "UBOT",
        "text": "Use the reset link",
        "blocks": [{"type": "context_actions", "block_id": "feedback:iid"}],
    }
    messages = [
        {"ts": "1.0", "user": "U1", "text": "<@UBOT> how to reset?"},
        answer_msg,
        {"ts": "2.5", "user": "U9", "subtype": "channel_join", "text": "joined"},
    ]
    turns = thread_history(
        messages + [{"ts": "3.0", "user": "U1", "text": "now"}], before_ts="3.0", bot_user_id="UBOT", bot_id="B1"
    )
    assert [(t.role, t.text) for t in turns] == [("user", "how to reset?"), ("assistant", "Use the reset link")]
    assert bot_answered(messages, "U1", "UBOT", "B1") and not bot_answered(messages, "U7", "UBOT", "B1")
    handoff = {"ts": "4.0", "bot_id": "B1", "text": "A human will reply", "blocks": [{"type": "section"}]}
    assert not bot_answered(messages + [handoff], "U1", "UBOT", "B1")


def test_replies_to_the_asker_after_their_question_until_they_speak_again():
    question = {"ts": "100.0", "user": "U1", "text": "how do refunds work?"}
    cut = {"ts": "101.0", "bot_id": "B1", "text": "Refunds go", "recipient_user_id": "U1"}
    feedback = {"type": "actions", "block_id": "feedback:i1", "elements": []}
    finished = {**cut, "blocks": [feedback]}
    other = {"ts": "100.5", "user": "U2", "text": "same question here"}
    their_answer = {"ts": "100.7", "bot_id": "B1", "text": "For you, U2", "recipient_user_id": "U2"}
    hand_off = {"ts": "100.8", "bot_id": "B1", "text": "A human will follow up"}  # posted whole: no recipient
    asked_again = {"ts": "100.9", "user": "U1", "text": "and partial ones?"}
    earlier_answer = {"ts": "99.0", "bot_id": "B1", "text": "An older answer", "recipient_user_id": "U1"}

    def found(*messages):
        return replies_to_asker(list(messages), after_ts="100.0", asker="U1", bot_user_id="U0BOT", bot_id="B1")

    assert found(earlier_answer, question, cut) == [cut]
    assert found(cut, question) == [cut]  # any order Slack returns
    assert found(question, other, their_answer, hand_off, cut) == [cut]  # never another asker's
    assert found(question, other, their_answer, hand_off) == []
    assert found(question, asked_again, cut) == []  # after the asker spoke again it may answer that
    assert found(earlier_answer, question) == []
    assert feedback_interactions(finished) == ["i1"] and is_answer(finished) and not is_answer(cut)
    assert is_cut_stream(cut) and not is_cut_stream(finished)
