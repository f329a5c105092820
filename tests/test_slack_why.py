"""`/kb why <message link>` end to end: a real question answered through the Slack emulator, then an
admin asks why, and the ephemeral Block Kit reply (checked by the strict emulator) shows every item."""

from __future__ import annotations

import json

import pytest

from bot.engine.why import explain, match_link, parse_message_link, render_terminal
from tests.emulators.slack_payloads import CHANNEL_ID, app_mention_event, form_body, slash_command_form
from tests.test_slack_e2e import ADMIN, ANSWERABLE, running_bot

pytestmark = pytest.mark.timeout(240)


async def kb(bot, text: str, user: str) -> dict:
    before = len(bot.emu.responses)
    form = slash_command_form("/kb", text=text, user_id=user, response_url=bot.emu.response_url())
    status, _, _ = await bot.post(form_body(form), "application/x-www-form-urlencoded")
    assert status == 200
    return (await bot.emu.wait_for_response(before + 1, timeout=20))[before]


async def test_kb_why_explains_a_real_answer_to_an_admin_only(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts) as bot:
        mention = app_mention_event(ANSWERABLE)
        bot.emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"])
        _, reply = await bot.next_post(bot.event(mention))
        row = await bot.interaction()
        question_link = (await bot.state.client.chat_getPermalink(channel=CHANNEL_ID, message_ts=mention["ts"]))[
            "permalink"
        ]

        refused = await kb(bot, f"why {question_link}", user="U0NOBODY")
        assert "only knowledge admins" in refused["text"] and "blocks" not in refused

        shown = await kb(bot, f"why <{question_link}>", user=ADMIN)  # Slack wraps pasted links in <>
        assert shown["response_type"] == "ephemeral"
        text = json.dumps(shown["blocks"])
        assert row["interaction_id"] in text and "API key" in text  # the question
        assert "Query searched" in text and "Retrieved" in text
        first = row["retrieved"][0]
        assert (
            "1. " in text
            and f"score {first['score']:.3f}" in text
            and f"cosine {first['vector_similarity']:.3f}" in text
        )
        for signal in ("top_similarity", "term_coverage", "citation_coverage"):
            assert f"`{signal}`" in text
        assert "probe pairs" in text and "separation AUROC" in text  # the calibration in force
        assert f"{row['decision']}: confidence {row['confidence']:.3f}" in text
        assert "escalate below 0.35" in text and "answer plainly from 0.60" in text  # the thresholds logged
        assert "extractive" in text and "tokens 0 in / 0 out" in text and "ms (retrieve" in text

        # a link to the bot's reply in the thread explains the question it answered
        bot.emu.add_message(CHANNEL_ID, "reply", ts=reply.response["ts"], thread_ts=mention["ts"])
        reply_link = (await bot.state.client.chat_getPermalink(channel=CHANNEL_ID, message_ts=reply.response["ts"]))[
            "permalink"
        ]
        assert "thread_ts" in reply_link
        again = await kb(bot, f"why {reply_link}", user=ADMIN)
        assert row["interaction_id"] in json.dumps(again["blocks"])

        usage = await kb(bot, "why not-a-link", user=ADMIN)
        assert "Usage" in usage["text"]


def test_message_links_and_the_terminal_rendering():
    assert parse_message_link("<https://x.slack.com/archives/C0AB/p1700000000123456|link>") == (
        "C0AB",
        "1700000000.123456",
        None,
    )
    assert parse_message_link("https://x.slack.com/archives/C0AB/p1700000001000200?thread_ts=1700000000.123456")[2] == (
        "1700000000.123456"
    )
    with pytest.raises(ValueError):
        parse_message_link("https://example.com/nope")
    rows = [
        {"interaction_id": "a", "thread_ts": "1.000001", "slack": {"message_ts": "1.000001"}},
        {"interaction_id": "b", "thread_ts": "1.000001", "slack": {"message_ts": "3.000001"}},
    ]
    assert match_link(rows, "2.000000", "1.000001")["interaction_id"] == "a"  # the reply after the first question
    assert match_link(rows, "3.000001", None)["interaction_id"] == "b"
    why = explain(
        {
            "interaction_id": "x1",
            "question": "q?",
            "search_query": "q? with thread",
            "retrieved": [{"chunk_id": "c", "doc_id": "d", "title": "T", "url": "u", "score": 0.5}],
            "signals": {"raw_score": 0.2, "calibration": None, "top_similarity": 0.4, "caveat_threshold": 0.35},
            "confidence": 0.2,
            "decision": "escalate",
            "latency_ms": {"retrieve": 3.0, "total": 5.0},
        }
    )
    text = render_terminal(why)
    assert "(rewritten)" in text and "escalate: confidence 0.200 (raw 0.200); escalate below 0.35" in text
    assert "none: fixed thresholds" in text and "top_similarity" in text and "5 ms (retrieve 3)" in text
