"""Durability: a shutdown mid-answer loses no question, and a restart answers nothing twice.

Two bot instances in turn over one store directory and one Slack emulator, as a container
restart would be: the first is shut down (what `serve` does on SIGTERM) with 20 answers in
flight, the second recovers, then Slack redelivers all 20 events.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.slack.app import create_app, create_web_app, shutdown
from bot.slack.blocks import ASK_HUMAN_ACTION
from bot.store import InteractionStore
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_payloads import CHANNEL_ID, TEAM_ID, app_mention_event
from tests.test_slack_e2e import (
    ANSWERABLE,
    ESCALATION_CHANNEL,
    SECRET,
    BotUnderTest,
    build_pipeline,
)

pytestmark = pytest.mark.timeout(300)  # the first test also builds the shared sample index


class HeldPipeline:
    """Answers only as the test releases them (a semaphore): work the shutdown finds in flight."""

    def __init__(self, inner):
        self.inner, self.release = inner, asyncio.Semaphore(0)

    async def answer(self, question, *, on_delta=None):
        await self.release.acquire()
        return await self.inner.answer(question, on_delta=on_delta)


@asynccontextmanager
async def bot_instance(emu, logs, sample_settings, parts):
    settings = sample_settings.model_copy(
        update={
            "slack_bot_token": SecretStr("xoxb-test"),
            "slack_signing_secret": SecretStr(SECRET),
            "slack_api_url": emu.api_url,
            "escalation_channel": ESCALATION_CHANNEL,
            "user_rate_per_minute": 1000,
            "global_concurrency": 50,
            "shutdown_drain_seconds": 1.0,
        }
    )
    store = InteractionStore(logs)
    state = create_app(settings, build_pipeline(settings, parts), store, parts["index"])
    runner = web.AppRunner(create_web_app(state))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with aiohttp.ClientSession() as session:
        try:
            yield BotUnderTest(emu, state, f"http://127.0.0.1:{runner.addresses[0][1]}", session, store)
        finally:
            await runner.cleanup()


async def until_ok(session: aiohttp.ClientSession, url: str, alive, timeout: float = 150.0) -> None:
    """Poll `url` until it answers 200; AssertionError if `alive()` turns false or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        assert alive(), f"the server died before {url} answered 200"
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{url} never answered 200"
        await asyncio.sleep(0.1)


def replies_in(emu, thread_ts: str) -> list[dict]:
    """Every message of the bot's in the question's thread, a stream still open included."""
    return emu.bot_replies(CHANNEL_ID, thread_ts, finished=False)


async def test_shutdown_with_20_answers_in_flight_then_restart_and_replay(tmp_path, sample_settings, engine_parts):
    mentions = [
        app_mention_event(f"{ANSWERABLE} ({n})", user=f"U0ASKER{n:02d}", ts=f"1700000{n:03d}.000100") for n in range(20)
    ]
    async with SlackEmulator() as emu:
        for mention in mentions:
            emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"], user=mention["user"])
        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as first:
            responder = first.state.responder
            responder.pipeline = held = HeldPipeline(responder.pipeline)
            for n, mention in enumerate(mentions):
                assert (await first.event(mention, event_id=f"EvDur{n:02d}"))[0] == 200
            for _ in range(200):
                if len(responder.in_flight) == 20:
                    break
                await asyncio.sleep(0.05)
            assert len(responder.in_flight) == 20
            for _ in range(8):  # some finish during the drain, the rest are cut off
                held.release.release()
            unfinished = await shutdown(first.state, timeout=5.0)
            assert 0 < unfinished < 20
            status, _, _ = await first.event(app_mention_event(ANSWERABLE), event_id="EvLate")
            assert status == 503  # a shutting-down instance takes no new work: Slack retries it later
        answered_before = {m["ts"] for m in mentions if replies_in(emu, m["ts"])}
        assert len(answered_before) == 20 - unfinished

        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as second:
            bot = second.state
            assert await bot.responder.recover(bot.client, bot.tasks.spawn) == unfinished
            await bot.tasks.drain(timeout=90)
            for n, mention in enumerate(mentions):  # Slack redelivers every event after the restart
                assert (await second.event(mention, event_id=f"EvDur{n:02d}"))[0] == 200
            await bot.tasks.drain(timeout=60)
            assert InteractionStore(tmp_path / "logs").unfinished() == []
        per_question = [len(replies_in(emu, mention["ts"])) for mention in mentions]
        assert per_question == [1] * 20, per_question  # 20/20 answered, none twice


async def test_dedupe_survives_a_restart(tmp_path, sample_settings, engine_parts):
    mention = app_mention_event(ANSWERABLE)
    async with SlackEmulator() as emu:
        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as first:
            await first.next_post(first.event(mention, event_id="Ev0ONCE"))
        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as second:
            await second.event(mention, event_id="Ev0ONCE")  # Slack's retry, to the restarted bot
            await second.event(mention, event_id="Ev0OTHER")  # the same message under another event id
            await second.state.tasks.drain(timeout=30)
        assert len(replies_in(emu, mention["ts"])) == 1


async def test_old_unfinished_questions_get_an_apology(tmp_path, sample_settings, engine_parts):
    from bot.slack import answering

    mention = app_mention_event(ANSWERABLE)
    async with SlackEmulator() as emu:
        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as bot:
            ask = answering.Ask(
                channel=CHANNEL_ID,
                message_ts=mention["ts"],
                thread_ts=mention["ts"],
                user=mention["user"],
                text=mention["text"],
                surface="mention",
            )
            store = bot.state.store
            assert await store.receive(CHANNEL_ID, mention["ts"], ask=ask.to_record())
            # the process had started streaming its answer when it went down: cut text, stream open
            cut = await started_stream(bot.state.client, mention["ts"], mention["user"], "To create an API key, open")
            await store.note_reply(CHANNEL_ID, mention["ts"], cut["ts"])
            await store.mark_received(CHANNEL_ID, mention["ts"], "unfinished")  # what a shutdown records
            old = answering.RECOVER_MAX_AGE_SECONDS
            answering.RECOVER_MAX_AGE_SECONDS = -1  # everything counts as old
            try:
                assert await bot.state.responder.recover(bot.state.client, bot.state.tasks.spawn) == 1
                await bot.state.tasks.drain(timeout=30)
            finally:
                answering.RECOVER_MAX_AGE_SECONDS = old
            [apology] = replies_in(emu, mention["ts"])  # written over the cut stream, now closed
            assert "restarted" in apology["text"] and store.unfinished() == []
            assert apology["ts"] == cut["ts"] and not emu.workspace.open_streams


async def test_serve_stops_gracefully_on_sigterm(tmp_path, sample_settings, unused_tcp_port):
    """What `docker stop` sends: serve() returns (it is not killed) after draining."""
    import os
    import signal

    from bot.slack.app import build_bot, serve

    settings = sample_settings.model_copy(
        update={
            "slack_bot_token": SecretStr("xoxb-test"),
            "slack_signing_secret": SecretStr(SECRET),
            "shutdown_drain_seconds": 1.0,
        }
    )
    server = asyncio.create_task(serve(build_bot(settings), host="127.0.0.1", port=unused_tcp_port))
    async with aiohttp.ClientSession() as session:
        try:
            await until_ok(session, f"http://127.0.0.1:{unused_tcp_port}/healthz", lambda: not server.done())
        except AssertionError:
            server.cancel()
            pytest.fail("serve() never answered /healthz")
    os.kill(os.getpid(), signal.SIGTERM)  # serve's handler catches it; without one, pytest would die here
    await asyncio.wait_for(server, 60)
    assert server.done() and server.exception() is None


class KilledAfterPosting(InteractionStore):
    """The process dies right after the escalation post, before its "open" row is written."""

    async def record_escalation(self, interaction_id, *, status, **fields):
        if status == "open":
            raise asyncio.CancelledError("killed")
        return await super().record_escalation(interaction_id, status=status, **fields)


async def test_a_kill_between_the_escalation_post_and_its_record_makes_no_duplicate(tmp_path, sample_settings):
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.engine.types import Answer, Decision, Question
    from bot.observability import Metrics
    from bot.slack.escalation import TRIGGER_ASKED, Escalations

    async with SlackEmulator() as emu:
        settings = sample_settings.model_copy(update={"escalation_channel": ESCALATION_CHANNEL})
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
        question = Question(
            text="help", asker="U0ASKER", channel=CHANNEL_ID, thread_ts="1700000000.000100", interaction_id="i-kill"
        )
        answer = Answer(interaction_id="i-kill", question="help", text="draft", decision=Decision.ESCALATE)
        before_restart = Escalations(settings, KilledAfterPosting(tmp_path / "logs"), Metrics())
        with pytest.raises(asyncio.CancelledError):
            await before_restart.escalate(
                client, question=question, answer=answer, question_ts=None, trigger=TRIGGER_ASKED
            )
        after_restart = Escalations(settings, InteractionStore(tmp_path / "logs"), Metrics())
        assert (
            await after_restart.escalate(
                client, question=question, answer=answer, question_ts=None, trigger=TRIGGER_ASKED
            )
            is False
        )
        posts = [c for c in emu.calls_to("chat.postMessage") if c.args.get("channel") == ESCALATION_CHANNEL]
        assert len(posts) == 1


# --- pending escalations left by a process that died -----------------------------------------


def escalation_posts(emu) -> list[dict]:
    return [m for m in emu.workspace.messages.get(ESCALATION_CHANNEL, []) if m.get("bot_id")]


async def logged_escalation_case(store: InteractionStore, interaction_id: str):
    from bot.engine.types import Answer, Decision, Question

    question = Question(
        text="how do I rotate the API key?",
        asker="U0ASKER",
        channel=CHANNEL_ID,
        thread_ts="1700000000.000100",
        interaction_id=interaction_id,
    )
    answer = Answer(interaction_id=interaction_id, question=question.text, text="draft", decision=Decision.ESCALATE)
    await store.log_answer(question, answer, slack={"message_ts": "1700000000.000100"})
    return question, answer


def escalations_for(settings, logs, **update):
    from bot.observability import Metrics
    from bot.slack.escalation import Escalations

    return Escalations(settings.model_copy(update=update), InteractionStore(logs), Metrics())


async def test_a_pending_escalation_whose_poster_died_is_posted_once_by_the_sweep(tmp_path, sample_settings):
    """The process wrote "pending" and died before posting: after the lease, the sweeps of two
    processes (run at once) post it exactly once, record it open and tell the asker."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.slack.escalation import TRIGGER_ASKED

    settings = sample_settings.model_copy(update={"escalation_channel": ESCALATION_CHANNEL})
    logs = tmp_path / "logs"
    async with SlackEmulator() as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
        store = InteractionStore(logs)
        await logged_escalation_case(store, "i-dead")
        await store.record_escalation("i-dead", status="pending", trigger=TRIGGER_ASKED)  # then the kill
        first = escalations_for(settings, logs, escalation_lease_seconds=0.05)
        second = escalations_for(settings, logs, escalation_lease_seconds=0.05)
        await asyncio.sleep(0.1)
        finished = await asyncio.gather(first.sweep(client), second.sweep(client))
        assert sorted(finished) == [0, 1]
        [post] = escalation_posts(emu)
        row = await store.get_escalation("i-dead")
        assert row["status"] == "open" and row["escalation_ts"] == post["ts"] and row["trigger"] == TRIGGER_ASKED
        told = [m for m in emu.thread(CHANNEL_ID, "1700000000.000100") if m.get("bot_id")]
        assert len(told) == 1 and "human" in told[0]["text"].lower()
        await asyncio.sleep(0.1)
        assert await first.sweep(client) == 0  # open now: nothing left to sweep
        assert len(escalation_posts(emu)) == 1


async def test_a_fresh_pending_escalation_of_a_live_process_is_not_double_posted(tmp_path, sample_settings):
    """Another process reserved the escalation a moment ago and is posting it now (slowly): a
    sweep in this process must leave it alone until its lease runs out."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.slack.escalation import TRIGGER_ASKED

    settings = sample_settings.model_copy(update={"escalation_channel": ESCALATION_CHANNEL})
    logs = tmp_path / "logs"
    async with SlackEmulator() as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
        question, answer = await logged_escalation_case(InteractionStore(logs), "i-live")
        emu.delay("chat.postMessage", 1.0)  # the live process's post is slow
        live = escalations_for(settings, logs, escalation_lease_seconds=60)
        sweeper = escalations_for(settings, logs, escalation_lease_seconds=60)
        posting = asyncio.create_task(
            live.escalate(client, question=question, answer=answer, question_ts=None, trigger=TRIGGER_ASKED)
        )
        for _ in range(100):
            if (await InteractionStore(logs).get_escalation("i-live") or {}).get("status") == "pending":
                break
            await asyncio.sleep(0.02)
        assert await sweeper.sweep(client) == 0
        assert await posting is True
        assert await sweeper.sweep(client) == 0
        assert len(escalation_posts(emu)) == 1


async def test_the_sweep_finds_a_post_made_just_before_the_kill_and_does_not_repost(tmp_path, sample_settings):
    """Killed after the post but before its "open" record: the sweep finds the post in the
    escalation channel's history, records it, tells the asker, and posts nothing new."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.observability import Metrics
    from bot.slack.escalation import TRIGGER_ASKED, Escalations

    settings = sample_settings.model_copy(update={"escalation_channel": ESCALATION_CHANNEL})
    logs = tmp_path / "logs"
    async with SlackEmulator() as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
        question, answer = await logged_escalation_case(InteractionStore(logs), "i-half")
        emu.add_message(ESCALATION_CHANNEL, "someone else's post")
        killed = Escalations(settings, KilledAfterPosting(logs), Metrics())
        with pytest.raises(asyncio.CancelledError):
            await killed.escalate(client, question=question, answer=answer, question_ts=None, trigger=TRIGGER_ASKED)
        [post] = escalation_posts(emu)
        await asyncio.sleep(0.1)
        assert await escalations_for(settings, logs, escalation_lease_seconds=0.05).sweep(client) == 1
        assert escalation_posts(emu) == [post]
        row = await InteractionStore(logs).get_escalation("i-half")
        assert row["status"] == "open" and row["escalation_ts"] == post["ts"]
        assert len([m for m in emu.thread(CHANNEL_ID, "1700000000.000100") if m.get("bot_id")]) == 1


async def started_stream(client, thread_ts: str, user: str, text: str) -> dict:
    """A reply the bot had started streaming to `user` in the thread (what a kill leaves open)."""
    return await client.chat_startStream(
        channel=CHANNEL_ID, thread_ts=thread_ts, markdown_text=text, recipient_team_id=TEAM_ID, recipient_user_id=user
    )


async def received_ask(store, *, message_ts: str, thread_ts: str, user: str, text: str = ANSWERABLE):
    """A question as the listener records it on arrival (with the bot's ids, as a real event has)."""
    from bot.slack import answering

    ask = answering.Ask(
        channel=CHANNEL_ID,
        message_ts=message_ts,
        thread_ts=thread_ts,
        user=user,
        text=text,
        surface="mention",
        bot_user_id="U000BOT",
        bot_id="B000BOT",
    )
    assert await store.receive(CHANNEL_ID, message_ts, ask=ask.to_record())
    return ask


async def logged_answer_footer(store, mention: dict) -> list[dict]:
    """An answer to `mention` logged as the bot logs it before posting, and the feedback footer that
    names its interaction (what the posted answer carries)."""
    from tests.test_store import make_pair

    question, answer = make_pair()
    question = question.model_copy(update={"channel": CHANNEL_ID, "asker": mention["user"]})
    answer = answer.model_copy(update={"interaction_id": question.interaction_id})
    await store.log_answer(question, answer, slack={"message_ts": mention["ts"], "surface": "mention"})
    helpful = {"type": "button", "text": {"type": "plain_text", "text": "Helpful"}, "action_id": "up"}
    return [{"type": "actions", "block_id": f"feedback:{question.interaction_id}", "elements": [helpful]}]


@pytest.mark.parametrize(
    "recorded, finished",
    [(True, False), (False, False), (False, True), (True, True)],
    ids=["stream-recorded", "killed-before-the-record", "finished-not-recorded-done", "finished-and-recorded"],
)
async def test_a_reply_the_dead_process_left_is_rewritten_once_or_kept_when_finished(
    tmp_path, sample_settings, engine_parts, recorded, finished
):
    """The process records a started stream's ts only after Slack showed its first words, and the
    question as done only after its answer is posted: a kill in between leaves a reply no record
    points to, or a finished answer recorded as unfinished. The restart reads the thread: a cut
    stream is closed and the answer written over it; a finished answer whose feedback names an
    interaction logged for this question is kept and the question recorded done. One message."""

    mention = app_mention_event(ANSWERABLE)
    async with SlackEmulator() as emu:
        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as bot:
            store = bot.state.store
            await received_ask(store, message_ts=mention["ts"], thread_ts=mention["ts"], user=mention["user"])
            cut = await started_stream(bot.state.client, mention["ts"], mention["user"], "To create an API key, open")
            if recorded:
                await store.note_reply(CHANNEL_ID, mention["ts"], cut["ts"])
            if finished:  # the stream ended with the answer's footer; the kill came before "done"
                footer = await logged_answer_footer(store, mention)
                await bot.state.client.chat_stopStream(channel=CHANNEL_ID, ts=cut["ts"], blocks=footer)
            await store.mark_received(CHANNEL_ID, mention["ts"], "unfinished")
            assert await bot.state.responder.recover(bot.state.client, bot.state.tasks.spawn) == 1
            await bot.state.tasks.drain(timeout=60)
            [answer] = replies_in(emu, mention["ts"])
            assert answer["ts"] == cut["ts"] and not emu.workspace.open_streams
            if finished:
                assert answer["text"] == "To create an API key, open"  # left as it was, not answered twice
                assert not emu.calls_to("chat.update") and len(emu.calls_to("chat.stopStream")) == 1
            else:
                assert "interrupted" not in answer["text"] and ASK_HUMAN_ACTION in buttons(answer)
            assert store.unfinished() == []


async def test_an_answer_posted_whole_before_the_kill_is_not_posted_again(tmp_path, sample_settings, engine_parts):
    """Posted whole (streaming off, or the extractive answerer), then killed before the question was
    recorded done: the answer's feedback names its interaction, so the restart keeps it."""
    mention = app_mention_event(ANSWERABLE)
    async with SlackEmulator() as emu:
        emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"], user=mention["user"])
        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as bot:
            store = bot.state.store
            await received_ask(store, message_ts=mention["ts"], thread_ts=mention["ts"], user=mention["user"])
            footer = await logged_answer_footer(store, mention)
            section = {"type": "section", "text": {"type": "mrkdwn", "text": "Open Settings > API."}}
            await bot.state.client.chat_postMessage(
                channel=CHANNEL_ID, thread_ts=mention["ts"], text="Open Settings > API.", blocks=[section, *footer]
            )
            await store.mark_received(CHANNEL_ID, mention["ts"], "unfinished")
            assert await bot.state.responder.recover(bot.state.client, bot.state.tasks.spawn) == 1
            await bot.state.tasks.drain(timeout=60)
            [kept] = replies_in(emu, mention["ts"])
            assert kept["text"] == "Open Settings > API." and store.unfinished() == []


async def test_a_recovery_never_takes_the_same_askers_other_answer_in_the_thread(
    tmp_path, sample_settings, engine_parts
):
    """An asker posts a second question in a thread while the first is being answered; the
    process dies after finishing the first (streamed, after the second question's ts) and before
    the second showed anything. The restart must answer the second, not take the first's answer
    for it (which would record it done and leave it silent), and must not touch the first's."""

    thread = app_mention_event(ANSWERABLE)
    second = {"ts": f"{float(thread['ts']) + 1:.6f}", "user": thread["user"]}
    async with SlackEmulator() as emu:
        emu.add_message(CHANNEL_ID, thread["text"], ts=thread["ts"], user=thread["user"])
        emu.add_message(
            CHANNEL_ID, "And for the EU workspace?", ts=second["ts"], user=thread["user"], thread_ts=thread["ts"]
        )
        async with bot_instance(emu, tmp_path / "logs", sample_settings, engine_parts) as bot:
            store = bot.state.store
            await received_ask(store, message_ts=second["ts"], thread_ts=thread["ts"], user=thread["user"])
            first_answer = await started_stream(
                bot.state.client, thread["ts"], thread["user"], "To create an API key, open Settings."
            )
            footer = await logged_answer_footer(store, thread)
            await bot.state.client.chat_stopStream(channel=CHANNEL_ID, ts=first_answer["ts"], blocks=footer)
            await store.mark_received(CHANNEL_ID, second["ts"], "unfinished")
            assert await bot.state.responder.recover(bot.state.client, bot.state.tasks.spawn) == 1
            await bot.state.tasks.drain(timeout=60)
            replies = replies_in(emu, thread["ts"])
            assert [r["ts"] for r in replies][0] == first_answer["ts"] and len(replies) == 2
            assert replies[0]["text"] == "To create an API key, open Settings."  # the first's answer untouched
            assert ASK_HUMAN_ACTION in buttons(replies[1])  # the second answered, in its own reply
            assert store.unfinished() == []


async def test_two_processes_recovering_one_data_dir_answer_each_question_once(tmp_path, sample_settings, engine_parts):
    """Two instances start on the same data dir at once (a rolling restart, a double start):
    each unfinished question is answered by exactly one of them."""
    mentions = [app_mention_event(f"{ANSWERABLE} ({n})", ts=f"1700001{n:03d}.000100") for n in range(3)]
    logs = tmp_path / "logs"
    async with SlackEmulator() as emu:
        store = InteractionStore(logs)
        for mention in mentions:
            emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"], user=mention["user"])
            ask = {"channel": CHANNEL_ID, "message_ts": mention["ts"], "thread_ts": mention["ts"]}
            ask.update(user=mention["user"], text=mention["text"], surface="mention")
            assert await store.receive(CHANNEL_ID, mention["ts"], ask=ask)
            await store.mark_received(CHANNEL_ID, mention["ts"], "unfinished")
        async with (
            bot_instance(emu, logs, sample_settings, engine_parts) as one,
            bot_instance(emu, logs, sample_settings, engine_parts) as two,
        ):
            taken = await asyncio.gather(
                *(bot.state.responder.recover(bot.state.client, bot.state.tasks.spawn) for bot in (one, two))
            )
            assert sum(taken) == 3
            await asyncio.gather(one.state.tasks.drain(timeout=60), two.state.tasks.drain(timeout=60))
        assert [len(replies_in(emu, mention["ts"])) for mention in mentions] == [1, 1, 1]
        assert store.unfinished() == []


# --- kill -9 mid-answer, a real process ----------------------------------------------------


@pytest.mark.slow  # two real `supportbot serve` processes, the first killed with SIGKILL
@pytest.mark.timeout(600)  # run alone, it also builds the shared sample index on a loaded box
async def test_kill_9_mid_answer_then_restart_and_slack_retry_gives_exactly_one_outcome(tmp_path, sample_data_dir):
    """`supportbot serve` answers two questions through Claude (the Anthropic emulator, slow) and is
    SIGKILLed while one is still with Claude and the other's answer is half streamed into Slack. A
    new process starts on the same data dir and Slack retries both events (`X-Slack-Retry-Num: 1`):
    each asker sees exactly one reply, never none, never two, and the half-streamed message is
    closed and rewritten with the whole answer (never left open with cut text)."""
    import shutil
    import signal
    import subprocess
    import sys

    from tests.emulators.anthropic_api import AnthropicEmulator, Reply
    from tests.emulators.processes import stop_gracefully
    from tests.test_faults import free_port, subprocess_env

    data_dir = tmp_path / "data"
    shutil.copytree(sample_data_dir / "index", data_dir / "index")
    waiting = app_mention_event(ANSWERABLE)  # still with Claude when the process dies
    streaming = app_mention_event(ANSWERABLE, user="U0STREAM")  # half streamed when it dies
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    async with SlackEmulator() as emu, AnthropicEmulator() as llm:
        for mention in (waiting, streaming):
            emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"], user=mention["user"])
        # the first answer is held back; the second streams at ~4 tokens a second, a piece at a time
        llm.script(Reply(delay=30.0), Reply(delta_chars=4))
        llm.tokens_per_second = 4.0
        env = {
            **subprocess_env(data_dir),
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SECRET,
            "SUPPORTBOT_SLACK_API_URL": emu.api_url,
            "SUPPORTBOT_ESCALATION_CHANNEL": ESCALATION_CHANNEL,
            "ANTHROPIC_API_KEY": "sk-ant-test-kill",
            "ANTHROPIC_BASE_URL": llm.base_url,
            "SUPPORTBOT_ANSWER_LEASE_SECONDS": "2",  # the dead process's claim runs out quickly
            "SUPPORTBOT_SWEEP_INTERVAL_SECONDS": "1",
        }

        async def start(name: str) -> tuple[subprocess.Popen, BotUnderTest, aiohttp.ClientSession]:
            port = free_port()
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
            process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=log,
            )
            session = aiohttp.ClientSession()
            try:
                await until_ok(session, f"http://127.0.0.1:{port}/readyz", lambda: process.poll() is None)
            except AssertionError as exc:
                raise AssertionError((tmp_path / f"{name}.log").read_text()[-3000:]) from exc
            return process, BotUnderTest(emu, None, f"http://127.0.0.1:{port}", session, None), session

        async def until(condition, what: str, tries: int = 300) -> None:
            for _ in range(tries):
                if condition():
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(what)

        first, bot, session = await start("first")
        try:
            assert (await bot.event(waiting, event_id="Ev0KILL9"))[0] == 200
            await until(lambda: llm.calls == 1, "the first process never asked Claude")
            assert (await bot.event(streaming, event_id="Ev0KILL9S"))[0] == 200
            await until(lambda: any(m.get("text") for m in replies_in(emu, streaming["ts"])), "nothing streamed")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
            await session.close()
        assert replies_in(emu, waiting["ts"]) == []  # killed before it could reply
        [cut] = replies_in(emu, streaming["ts"])  # killed mid-stream: cut text, stream still open
        assert (CHANNEL_ID, cut["ts"]) in emu.workspace.open_streams
        cut_text = cut["text"]

        llm.reset()
        llm.tokens_per_second = None
        second, bot, session = await start("second")
        try:
            assert (await bot.event(waiting, event_id="Ev0KILL9", headers=retry))[0] == 200
            assert (await bot.event(streaming, event_id="Ev0KILL9S", headers=retry))[0] == 200
            await until(lambda: replies_in(emu, waiting["ts"]), "the waiting question was never answered", 600)
            await until(lambda: ASK_HUMAN_ACTION in buttons(cut), "the cut stream was never rewritten", 600)
            await asyncio.sleep(4)  # several sweeps later: still one reply each
            for mention in (waiting, streaming):
                replies = replies_in(emu, mention["ts"])
                assert len(replies) == 1, [r.get("text") for r in replies]
        finally:
            await session.close()
            stop_gracefully(second)
        log = (tmp_path / "second.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        # the half-streamed message became the whole answer, with its feedback and "Ask a human"
        assert not emu.workspace.open_streams
        [answer] = replies_in(emu, streaming["ts"])
        assert answer["ts"] == cut["ts"] and "interrupted" not in answer["text"]
        assert len(answer["text"]) > len(cut_text) and ASK_HUMAN_ACTION in buttons(answer), answer


def buttons(message: dict) -> list[str]:
    """The action ids of a message's buttons."""
    return [e["action_id"] for b in message.get("blocks") or [] for e in b.get("elements") or [] if "action_id" in e]
