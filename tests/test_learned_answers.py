"""Learned answers end to end through the Slack emulator, and the entry store's rules.

A question the knowledge cannot answer is escalated; a human resolves it; the draft learned answer
is approved in the escalation channel; then a paraphrase of the question is answered from the
learned answer, citing it ("Answered by @x on DATE", linking the thread), with no escalation.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bot.slack import blocks
from bot.slack import learned as review
from knowledge.learned import LearnedEntry, LearnedStore, closest, is_learned, page_markdown
from tests.emulators.slack_payloads import (
    CHANNEL_ID,
    app_mention_event,
    block_actions_payload,
    interactive_body,
    view_submission_payload,
)
from tests.test_slack_e2e import ESCALATION_CHANNEL, running_bot

pytestmark = pytest.mark.timeout(480)

QUESTION = "Can the moon base cafeteria serve pickled herring on Tuesdays?"
HUMAN_ANSWER = (
    "Yes. The moon base cafeteria serves pickled herring every Tuesday from 11:00 to 14:00; "
    "order it at the galley counter."
)
PARAPHRASE = "Is pickled herring available at the moon base cafeteria on Tuesday?"


@pytest.fixture
def own_parts(tmp_path, sample_settings, sample_data_dir, embedder):
    """A copy of the sample index: approving writes to it."""
    from knowledge.index import KnowledgeIndex
    from knowledge.search import Searcher

    data_dir = tmp_path / "data"
    shutil.copytree(sample_data_dir / "index", data_dir / "index")
    settings = sample_settings.model_copy(update={"data_dir": data_dir})
    index = KnowledgeIndex.from_settings(settings, embedder)
    return settings, {"index": index, "searcher": Searcher.from_settings(settings, index), "embedder": embedder}


async def escalate_and_resolve(bot, question: str, answer: str, oncall: str = "U0ONCALL"):
    mention = app_mention_event(question)
    bot.emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"])
    await bot.event(mention)
    await bot.emu.wait_for("chat.postMessage", 2, timeout=30)
    [post] = bot.posts_in(ESCALATION_CHANNEL)
    iid = (await bot.interaction())["interaction_id"]
    submit = view_submission_payload(
        blocks.RESOLVE_VIEW,
        {blocks.RESOLVE_BLOCK: {blocks.RESOLVE_INPUT: {"type": "plain_text_input", "value": answer}}},
        user=oncall,
        private_metadata=iid,
    )
    status, _, _ = await bot.post(interactive_body(submit), "application/x-www-form-urlencoded")
    assert status == 200
    for _ in range(100):  # the draft follows the relayed answer
        drafts = [
            c for c in bot.posts_in(ESCALATION_CHANNEL, post.response["ts"]) if "Learned answer draft" in c.args["text"]
        ]
        if drafts:
            return mention, post, iid, drafts[-1]
        await bot.emu.wait_for("chat.postMessage", len(bot.emu.calls_to("chat.postMessage")) + 1, timeout=30)
    raise AssertionError("no learned answer draft was posted")


def buttons(call) -> dict[str, str]:
    actions = next(b for b in call.args["blocks"] if b["type"] == "actions")
    return {element["action_id"]: element["value"] for element in actions["elements"]}


async def test_a_resolved_escalation_becomes_a_learned_answer_that_answers_a_paraphrase(tmp_path, own_parts):
    settings, parts = own_parts
    async with running_bot(tmp_path, settings, parts) as bot:
        mention, post, iid, draft = await escalate_and_resolve(bot, QUESTION, HUMAN_ANSWER)
        text = json.dumps(draft.args["blocks"])
        assert "pickled herring" in text and "<@U0ONCALL>" in text and "Approve" in text
        entry_id = buttons(draft)[review.APPROVE_ACTION]
        store = LearnedStore(settings.data_dir)
        assert store.get(entry_id).status == "draft" and store.get(entry_id).interaction_id == iid

        # a click from another channel is refused; nothing is published
        outside = block_actions_payload(review.APPROVE_ACTION, entry_id, user="U0ONCALL", channel=CHANNEL_ID)
        await bot.click(outside)
        await bot.emu.wait_for("chat.postEphemeral", timeout=30)
        assert store.get(entry_id).status == "draft"

        updates = len(bot.emu.calls_to("chat.update"))
        approve = block_actions_payload(
            review.APPROVE_ACTION,
            entry_id,
            user="U0ONCALL",
            channel=ESCALATION_CHANNEL,
            message_ts=draft.response["ts"],
            thread_ts=post.response["ts"],
        )
        await bot.click(approve)
        calls = await bot.emu.wait_for("chat.update", updates + 1, timeout=120)  # after the learned source is indexed
        assert "Approved by <@U0ONCALL>" in json.dumps(calls[-1].args["blocks"])
        assert store.get(entry_id).status == "approved"

        escalations_before = len(bot.posts_in(ESCALATION_CHANNEL))
        again = app_mention_event(PARAPHRASE)
        _, reply = await bot.next_post(bot.event(again))
        row = await bot.interaction()
        assert row["decision"] != "escalate", row["reasons"]
        assert is_learned(row["retrieved"][0]["doc_id"]) and "11:00 to 14:00" in row["answer"]
        shown = json.dumps(reply.args["blocks"])
        assert "Answered by @user-u0oncall on" in shown and "archives/C000CHAN" in shown  # cited, linking the thread
        await bot.state.tasks.drain(timeout=10)
        assert len(bot.posts_in(ESCALATION_CHANNEL)) == escalations_before  # no escalation

    # the eval report marks answers drawn from learned entries, and shows their share
    from evals.cases import EvalCase
    from evals.report import render_markdown
    from evals.runner import run_eval

    cases = [EvalCase(id="l1", question=PARAPHRASE, reference_answer=HUMAN_ANSWER)]
    report = await run_eval(settings, cases, embedder=parts["embedder"], progress=False, cosine_correctness=False)
    assert report["per_case"][0]["from_learned"] and report["answer"]["learned_share"] == 1.0
    assert "| Answers from learned entries | 1.000 |" in render_markdown(report)


def entry(entry_id: str, title: str, **extra) -> LearnedEntry:
    return LearnedEntry(
        id=entry_id,
        title=title,
        answer="An answer.",
        thread_link="https://x.slack.com/archives/C1/p1",
        answered_by="U1",
        answered_by_name="ana",
        answered_at="2026-11-30T10:00:00+00:00",
        **extra,
    )


def test_store_approve_decline_update_and_delete(tmp_path):
    store = LearnedStore(tmp_path)
    store.save(entry("aaa", "How do refunds work?"))
    published = store.approve("aaa", "U9")
    page = store.page_path(published).read_text(encoding="utf-8")
    assert 'id: "learned/aaa"' in page and "Answered by @ana on 2026-11-30" in page and page == page_markdown(published)

    store.save(entry("bbb", "Declined one"))
    store.decline("bbb", "U9")
    assert not store.page_path(store.get("bbb")).exists()
    with pytest.raises(ValueError):
        store.approve("bbb", "U9")  # declined stays out

    store.save(entry("ccc", "How do refunds work exactly?", updates="aaa"))
    store.approve("ccc", "U9", answer="A better answer.")
    assert "A better answer." in store.page_path(store.get("aaa")).read_text(encoding="utf-8")
    assert not store.page_path(store.get("ccc")).exists()  # an update, not a duplicate page

    store.delete("aaa")
    assert store.get("aaa").status == "deleted" and not store.page_path(store.get("aaa")).exists()
    assert store.kb_dir.is_dir()  # still a (now empty) complete source: the next refresh drops the page


def test_closest_offers_an_update_only_above_the_line():
    entries = [entry("a", "x"), entry("b", "y")]
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert closest(np.array([0.99, 0.1], dtype=np.float32), entries, vectors)[0].id == "a"
    assert closest(np.array([0.7, 0.7], dtype=np.float32), entries, vectors) is None


def test_a_review_click_racing_the_draft_post_is_never_undone(tmp_path):
    """The draft's post is recorded after it is posted; an Approve click can land first. Both write
    the same entry from worker threads: no write may fail, and "approved" must stay."""
    from concurrent.futures import ThreadPoolExecutor

    store = LearnedStore(tmp_path)
    for n in range(20):
        store.save(entry(f"e{n}", f"Question {n}?"))
    with ThreadPoolExecutor(8) as pool:
        approvals = [pool.submit(store.approve, f"e{n}", "U9") for n in range(20)]
        posts = [pool.submit(store.set_review_post, f"e{n}", {"channel": "C0ESC", "ts": f"{n}.0"}) for n in range(20)]
        for future in approvals + posts:
            future.result()  # a shared temporary file made one of these raise FileNotFoundError
    for n in range(20):
        stored = store.get(f"e{n}")
        assert stored.status == "approved" and stored.review_post == {"channel": "C0ESC", "ts": f"{n}.0"}
