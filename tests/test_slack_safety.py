"""The attacks and Slack-limit failures of issue 11, one test each (each failed on the code before).

Rendering and scrubbing are pure functions, tested directly and against the strict emulator's
Block Kit validator; authorisation and request handling go end to end through the signed HTTP
endpoint, the real slack_sdk and the Slack emulator.
"""

from __future__ import annotations

import json
import time

import pytest

from bot.engine.types import Answer, Citation, Decision
from bot.slack import blocks
from bot.slack.delivery import error_code, plain
from bot.store import EscalationConflict, InteractionStore, escalation_transition_allowed
from evals.pii import scrub
from tests.emulators.slack_api import validate_message_blocks
from tests.emulators.slack_payloads import (
    CHANNEL_ID,
    TEAM_ID,
    USER_ID,
    app_mention_event,
    block_actions_payload,
    event_callback,
    interactive_body,
    json_body,
    view_submission_payload,
)
from tests.test_slack_e2e import (
    ANSWERABLE,
    ESCALATION_CHANNEL,
    UNANSWERABLE,
    running_bot,
)

pytestmark = pytest.mark.timeout(300)  # the first test also builds the shared sample index


def answer(text: str, citations=(), decision: Decision = Decision.ANSWER, **extra) -> Answer:
    return Answer(interaction_id="i-1", question="q", text=text, citations=list(citations), decision=decision, **extra)


def cite(number: int, url: str, title: str = "Article") -> Citation:
    return Citation(number=number, doc_id=f"d{number}", url=url, title=title, cited_text="x")


# --------------------------------------------------------------------------- rendering within Slack's limits


def test_a_7000_character_answer_with_citation_links_fits_slacks_total_text_limit():
    long_url = "https://help.example.com/articles/" + "a-very-long-article-slug-" * 4
    text = " ".join(f"Step {n} is documented here [{n % 9 + 1}]." for n in range(260))[:7000]
    message = blocks.answer_blocks(answer(text, [cite(n, f"{long_url}{n}") for n in range(1, 10)]))
    validate_message_blocks(message)  # no msg_blocks_too_long, no invalid_blocks
    assert blocks.text_size(message) <= blocks.MESSAGE_TEXT_BUDGET
    assert [b["type"] for b in message[-2:]] == ["context_actions", "actions"]


def test_a_120k_answer_is_cut_to_fit_and_says_so():
    long_text = "\n\n".join(f"Paragraph {n}: " + "word " * 400 for n in range(60))
    message = blocks.answer_blocks(answer(long_text))
    validate_message_blocks(message)
    assert blocks.text_size(message) <= blocks.MESSAGE_TEXT_BUDGET
    assert "was too long" in json.dumps(message) and message[-1]["type"] == "actions"


def test_escalation_with_a_pasted_8k_log_fits_and_the_rest_goes_to_the_thread():
    log_lines = "\n".join(
        f"2026-11-30T10:{n % 60:02d}:00Z ERROR worker-{n} failed: connection reset" for n in range(160)
    )
    question = "Why does the sync fail? Here is the log:\n" + log_lines
    draft = answer("Try this first. " * 500, [cite(1, "https://help.example.com/sync")], Decision.ESCALATE)
    post = blocks.escalation_blocks(
        interaction_id="i-1",
        question_mrkdwn=blocks.escape(question),
        asker="U1",
        permalink="https://x/p",
        answer=draft,
        trigger="low confidence",
    )
    validate_message_blocks(post)
    assert blocks.text_size(post) <= blocks.MESSAGE_TEXT_BUDGET
    overflow = blocks.escalation_overflow(blocks.escape(question), draft)
    assert len(overflow) == 2 and "worker-159" in overflow[0] and "worker-159" not in json.dumps(post)
    for rest in overflow:
        validate_message_blocks(blocks.notice_blocks(rest))


def test_cuts_never_fall_inside_a_code_fence_or_a_link():
    code = "```\n" + "\n".join(f"line {n}: value" for n in range(400)) + "\n```"
    links = " ".join(f"<https://x.example/{n}|link {n}>" for n in range(300))
    for text in (code, links, "intro " * 100 + code):
        for piece in blocks.split_text(text, 3000):
            assert len(piece) <= 3000 and piece.count("```") % 2 == 0
            assert piece.count("<") == piece.count(">")
    cut, was_cut = blocks.cut_to(links, 5000)
    assert was_cut and cut.count("<") == cut.count(">")


def test_sources_drop_whole_lines_instead_of_cutting_a_link():
    citations = [cite(n, f"https://help.example.com/{'x' * 150}/{n}", f"Title {n}") for n in range(1, 41)]
    block = blocks.sources_block(citations)
    text = block["elements"][0]["text"]
    assert len(text) <= blocks.SECTION_LIMIT and text.count("<") == text.count(">") and "more" in text


# --------------------------------------------------------------------------- unsafe links and markup


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>",
        "file:///srv/kb/secret.md",
        "/srv/supportbot/examples/knowledge/api.md",
        "vbscript:x",
    ],
)
def test_only_web_and_mail_links_become_links(url):
    rendered = blocks.answer_blocks(answer(f"See [the page]({url}) [1].", [cite(1, url, "Source")]))
    text = json.dumps(rendered)
    assert f"<{url}" not in text and "file://" not in text and "/srv/" not in text.replace("\\/", "/")
    scheme = url.split(":")[0] if ":" in url else url[:4]
    for variant, message in blocks.answer_variants(answer(f"See [the page]({url}) [1].", [cite(1, url, "Source")])):
        rendered_text = json.dumps(message)  # no link of any kind (Slack's <…|…> or Markdown's (…)) to it
        assert f"<{scheme}" not in rendered_text and f"]({scheme}" not in rendered_text, variant
    assert "<mailto:help@example.com|mail us>" in blocks.markdown_to_mrkdwn("[mail us](mailto:help@example.com)")


def test_streamed_text_is_escaped_like_posted_text():
    attacks = [
        "<!channel|" + "x" * 80 + ">",
        "<!subteam^S0123|@ops>",
        "<@U0123ABC>",
        "<https://evil.example|bank.com>",
        "[click](javascript:alert(1))",
    ]
    for attack in attacks:
        text = f"Before {attack} after."
        for size in (1, 3, 7, 50):
            sanitizer = blocks.StreamSanitizer()
            out = "".join(sanitizer.feed(text[i : i + size]) for i in range(0, len(text), size)) + sanitizer.flush()
            assert "<" not in out and "javascript:" not in out, (attack, size, out)
            assert "@channel" not in out


def test_kb_status_shows_no_server_paths():
    stats = {
        "exists": True,
        "documents": 2,
        "chunks": 5,
        "version": 3,
        "sources": ["/srv/supportbot/data/kb/help-center", "https://help.example.com/sitemap.xml"],
    }
    text = blocks.status_text(stats)
    assert "/srv/" not in text and "kb/help-center" in text and "https://help.example.com/sitemap.xml" in text


# --------------------------------------------------------------------------- PII


@pytest.mark.parametrize(
    "raw, placeholder, kept",
    [
        ("my card is 4111 1111 1111 1111 thanks", "<CARD>", "4111"),
        ("card 5500-0000-0000-0004", "<CARD>", "5500"),
        ("ping U012AB3CD7 about it", "<USER>", "U012AB3CD7"),
        ("ask @jane.doe or @ops-team", "<HANDLE>", "@jane.doe"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "<IBAN>", "DE89"),
        ("IBAN GB82 WEST 1234 5698 7654 32 THEN pay", "<IBAN>", "WEST"),  # a greedy match swallowed THEN
        ("from 10.20.30.40 and 192.168.1.1", "<IP>", "10.20.30.40"),
    ],
)
def test_pii_scrub_removes_cards_ids_handles_ibans_and_ips(raw, placeholder, kept):
    scrubbed = scrub(raw)
    assert placeholder in scrubbed and kept not in scrubbed


def test_pii_scrub_keeps_numbers_that_are_not_cards_or_ibans():
    assert scrub("version 4.2.1 of the app") == "version 4.2.1 of the app"
    assert "<CARD>" not in scrub("order 4111 1111 1111 1112")  # fails Luhn
    assert "<IBAN>" not in scrub("DE00 1234 5678 9012 3456 78")  # fails mod-97


# --------------------------------------------------------------------------- store transitions


def test_escalation_transitions_are_one_way():
    assert escalation_transition_allowed(None, "pending") and escalation_transition_allowed("pending", "open")
    assert escalation_transition_allowed("open", "claimed") and escalation_transition_allowed("claimed", "resolved")
    assert not escalation_transition_allowed("resolved", "claimed") and not escalation_transition_allowed(
        "resolved", "resolved"
    )
    assert not escalation_transition_allowed("claimed", "open") and not escalation_transition_allowed("open", "pending")
    assert escalation_transition_allowed("failed", "pending")


async def test_store_refuses_a_second_resolve_and_a_claim_after_resolve(tmp_path):
    store = InteractionStore(tmp_path / "logs")
    await store.record_escalation("i-9", status="open", escalation_ts="1.1", escalation_channel="C0ESC")
    await store.record_escalation("i-9", status="resolved", user="UA", human_answer="First answer.")
    with pytest.raises(EscalationConflict):
        await store.record_escalation("i-9", status="resolved", user="UB", human_answer="Second answer.")
    with pytest.raises(EscalationConflict):
        await store.record_escalation("i-9", status="claimed", user="UB")
    row = await store.get_escalation("i-9")
    assert (row["status"], row["human_answer"], row["resolved_by"]) == ("resolved", "First answer.", "UA")


def test_delivery_helpers():
    assert plain("x" * 5000).endswith("…") and len(plain("x" * 5000)) <= 3900
    assert error_code(TimeoutError()).startswith("connection_error")


# --------------------------------------------------------------------------- end to end: requests and clicks


async def test_malformed_unsigned_and_non_numeric_timestamp_requests_get_4xx(slack_bot_e2e):
    bot = slack_bot_e2e
    body = b"{not json"
    assert (await bot.post(body, "application/json"))[0] == 400  # signed, but malformed
    assert (await bot.post(b"payload=%7Bbroken", "application/x-www-form-urlencoded"))[0] == 400
    async with bot.session.post(
        f"{bot.base_url}/slack/events",
        data=json_body({"type": "event_callback"}),
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 401  # unsigned
    async with bot.session.post(
        f"{bot.base_url}/slack/events",
        data=b"{}",
        headers={"Content-Type": "application/json", "X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
    ) as resp:
        assert resp.status == 401  # a non-numeric timestamp is not a 500


@pytest.fixture
async def slack_bot_e2e(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts) as bot:
        yield bot


async def answered(bot, question: str = ANSWERABLE, user: str = USER_ID, channel: str = CHANNEL_ID):
    mention = app_mention_event(question, user=user, channel=channel)
    _, reply = await bot.next_post(bot.event(mention))
    return mention, reply, (await bot.interaction())["interaction_id"]


async def test_claim_and_resolve_only_from_the_escalation_channel(slack_bot_e2e):
    bot = slack_bot_e2e
    mention = app_mention_event(UNANSWERABLE)
    await bot.event(mention)
    await bot.emu.wait_for("chat.postMessage", 2, timeout=30)
    iid = (await bot.interaction())["interaction_id"]
    await bot.click(block_actions_payload(blocks.CLAIM_ACTION, iid, user="U0RANDOM", channel="C0ELSEWHERE"))
    await bot.click(block_actions_payload(blocks.RESOLVE_ACTION, iid, user="U0RANDOM", channel="C0ELSEWHERE"))
    await bot.state.tasks.drain(timeout=20)
    assert (await bot.store.get_escalation(iid))["status"] == "open"
    assert bot.emu.calls_to("views.open") == [] and bot.emu.calls_to("chat.update") == []


async def test_claim_and_resolve_only_by_the_oncall_group_when_configured(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts, escalation_actions_oncall_only=True) as bot:
        await bot.event(app_mention_event(UNANSWERABLE))
        await bot.emu.wait_for("chat.postMessage", 2, timeout=30)
        iid = (await bot.interaction())["interaction_id"]
        await bot.click(block_actions_payload(blocks.CLAIM_ACTION, iid, user="U0NOTONCALL", channel=ESCALATION_CHANNEL))
        await bot.state.tasks.drain(timeout=20)
        assert (await bot.store.get_escalation(iid))["status"] == "open"
        await bot.click(block_actions_payload(blocks.CLAIM_ACTION, iid, user="U0ONCALL", channel=ESCALATION_CHANNEL))
        await bot.state.tasks.drain(timeout=20)
        assert (await bot.store.get_escalation(iid))["claimed_by"] == "U0ONCALL"


async def test_a_slow_oncall_lookup_cannot_expire_the_resolve_trigger(tmp_path, sample_settings, engine_parts):
    """The trigger id of a Resolve click lives 3 s: the modal opens before usergroups.users.list
    (Tier 2, here 3.5 s slow) is asked; a non-member then sees the modal turn into a refusal."""
    from bot.slack.listeners import NOT_ONCALL_TEXT

    async with running_bot(tmp_path, sample_settings, engine_parts, escalation_actions_oncall_only=True) as bot:
        await bot.event(app_mention_event(UNANSWERABLE))
        await bot.emu.wait_for("chat.postMessage", 2, timeout=30)
        iid = (await bot.interaction())["interaction_id"]
        bot.emu.delay("usergroups.users.list", 3.5, times=2)
        await bot.click(block_actions_payload(blocks.RESOLVE_ACTION, iid, user="U0ONCALL", channel=ESCALATION_CHANNEL))
        [opened] = await bot.emu.wait_for("views.open", timeout=10)
        assert opened.response["ok"], opened.response
        await bot.state.tasks.drain(timeout=20)
        assert bot.emu.calls_to("views.update") == []  # on call: the modal stays
        await bot.click(
            block_actions_payload(blocks.RESOLVE_ACTION, iid, user="U0NOTONCALL", channel=ESCALATION_CHANNEL)
        )
        await bot.state.tasks.drain(timeout=20)
        assert all(call.response["ok"] for call in bot.emu.calls_to("views.open"))
        [refused] = bot.emu.calls_to("views.update")
        assert refused.response["ok"] and NOT_ONCALL_TEXT[:30] in json.dumps(refused.args["view"])
        assert (await bot.store.get_escalation(iid))["status"] == "open"


async def test_a_second_resolve_does_not_relay_or_overwrite_and_claim_does_not_reopen(slack_bot_e2e):
    bot = slack_bot_e2e
    mention = app_mention_event(UNANSWERABLE)
    await bot.event(mention)
    await bot.emu.wait_for("chat.postMessage", 2, timeout=30)
    iid = (await bot.interaction())["interaction_id"]

    def submit(text: str, user: str):
        return view_submission_payload(
            blocks.RESOLVE_VIEW,
            {blocks.RESOLVE_BLOCK: {blocks.RESOLVE_INPUT: {"type": "plain_text_input", "value": text}}},
            user=user,
            private_metadata=iid,
        )

    for text, user in (("The first answer.", "U0ONCALL"), ("A second answer.", "U0OTHER")):
        await bot.post(interactive_body(submit(text, user)), "application/x-www-form-urlencoded")
        await bot.state.tasks.drain(timeout=20)
    await bot.click(block_actions_payload(blocks.CLAIM_ACTION, iid, user="U0LATE", channel=ESCALATION_CHANNEL))
    await bot.state.tasks.drain(timeout=20)
    relayed = [c for c in bot.posts_in(CHANNEL_ID, mention["ts"]) if "answer." in json.dumps(c.args.get("blocks"))]
    assert len(relayed) == 1 and "The first answer." in json.dumps(relayed[0].args["blocks"])
    row = await bot.store.get_escalation(iid)
    assert (row["status"], row["human_answer"]) == ("resolved", "The first answer.")


async def test_button_values_naming_another_channels_or_users_interaction_are_refused(slack_bot_e2e):
    bot = slack_bot_e2e
    _, reply, iid = await answered(bot)
    # 👍 from a message in another channel naming this interaction
    forged = block_actions_payload(
        blocks.FEEDBACK_ACTION,
        f"up:{iid}",
        user="U0MALLORY",
        channel="C0OTHERCHAN",
        message_ts=reply.response["ts"],
        thread_ts=reply.args["thread_ts"],
    )
    await bot.click(forged)
    # "Ask a human" on someone else's question, in its own thread
    other = block_actions_payload(
        blocks.ASK_HUMAN_ACTION,
        iid,
        user="U0MALLORY",
        message_ts=reply.response["ts"],
        thread_ts=reply.args["thread_ts"],
    )
    await bot.click(other)
    await bot.state.tasks.drain(timeout=20)
    assert [r for r in bot.store.feedback() if r["interaction_id"] == iid] == []
    assert bot.posts_in(ESCALATION_CHANNEL) == []


async def test_slack_connect_users_from_another_organisation_are_dropped(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts, allowed_team_ids=[TEAM_ID]) as bot:
        guest = app_mention_event(ANSWERABLE, user="U0GUEST")
        guest["user_team"] = "T0OTHERORG"  # the actor's team; the event's team_id is the installing workspace
        status, _, _ = await bot.post(json_body(event_callback(guest)), "application/json")
        click = block_actions_payload(blocks.ASK_HUMAN_ACTION, "i-x", user="U0GUEST", team_id="T0OTHERORG")
        await bot.click(click)
        await bot.state.tasks.drain(timeout=20)
        assert status == 200 and bot.emu.calls_to("chat.postMessage") == []
        member = app_mention_event(ANSWERABLE)
        member["user_team"] = TEAM_ID
        await bot.next_post(bot.post(json_body(event_callback(member)), "application/json"))


async def test_kb_status_acks_before_reading_the_index(slack_bot_e2e):
    bot = slack_bot_e2e
    index = bot.state.index

    def slow_stats():
        time.sleep(4)  # longer than Slack's 3-second ack window
        return {"exists": False}

    index.stats = slow_stats
    try:
        started = time.perf_counter()
        status, _ = await bot.command("/kb-status")
        assert status == 200 and time.perf_counter() - started < 3
        [reply] = await bot.emu.wait_for_response(timeout=20)
        assert "index is empty" in reply["text"]
    finally:
        del index.stats


async def test_long_threads_are_read_to_their_latest_message():
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.slack.answering import read_thread
    from tests.emulators.slack_api import SlackEmulator

    async with SlackEmulator() as emu:
        parent = emu.add_message(CHANNEL_ID, "parent")
        for n in range(450):
            emu.add_message(CHANNEL_ID, f"reply {n}", thread_ts=parent["ts"])
        thread = await read_thread(AsyncWebClient(token="xoxb-test", base_url=emu.api_url), CHANNEL_ID, parent["ts"])
        assert len(thread) == 451 and thread[-1]["text"] == "reply 449"
        assert len(emu.calls_to("conversations.replies")) == 3  # 200 a page, following the cursor


async def test_group_dm_history_is_readable_with_the_manifests_scopes():
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.slack.answering import read_thread
    from tests.emulators.slack_api import SlackEmulator

    async with SlackEmulator() as emu:  # scopes: exactly what slack-manifest.yml asks for
        emu.add_channel("G0GROUPDM", is_mpim=True)
        parent = emu.add_message("G0GROUPDM", "question in a group DM")
        emu.add_message("G0GROUPDM", "more", thread_ts=parent["ts"])
        thread = await read_thread(AsyncWebClient(token="xoxb-test", base_url=emu.api_url), "G0GROUPDM", parent["ts"])
        assert [m["text"] for m in thread] == ["question in a group DM", "more"]


async def test_refused_feedback_buttons_degrade_to_plain_buttons_that_still_record_votes(slack_bot_e2e):
    bot = slack_bot_e2e
    bot.emu.inject(
        "chat.postMessage",
        error="invalid_blocks",
        times=1,
        when=lambda args: "context_actions" in json.dumps(args.get("blocks") or []),
    )
    mention = app_mention_event(ANSWERABLE)
    await bot.event(mention)
    await bot.emu.wait_for("chat.postMessage", 2, timeout=30)
    [refused, reply] = bot.posts_in(CHANNEL_ID, mention["ts"])
    assert refused.response["error"] == "invalid_blocks" and reply.response["ok"]
    iid = (await bot.interaction())["interaction_id"]
    kinds = [b["type"] for b in reply.args["blocks"]]
    assert "context_actions" not in kinds and kinds[-1] == "actions"  # the degraded variant arrived
    up = next(e for e in reply.args["blocks"][-1]["elements"] if e["action_id"] == blocks.FEEDBACK_UP_ACTION)
    await bot.click(
        block_actions_payload(
            blocks.FEEDBACK_UP_ACTION, up["value"], message_ts=reply.response["ts"], thread_ts=reply.args["thread_ts"]
        )
    )
    await bot.state.tasks.drain(timeout=20)
    assert [r["rating"] for r in bot.store.feedback() if r["interaction_id"] == iid] == ["up"]
    _, second, _ = await answered(bot, "How do I rotate an API key?")  # no second refused attempt
    assert "context_actions" not in json.dumps(second.args["blocks"]) and second.response["ok"]
