"""Three `supportbot serve` processes sharing one PostgreSQL and one S3 index, behind an imaginary
load balancer.

Real processes, a real database (the `postgres_server` fixture), a real S3 API (moto's server, the
`s3_server` fixture), the real SDKs against the Slack and Anthropic emulators. The replicas read one
knowledge index in a bucket; what they must agree on goes through the database: who answers a
message, the votes, the refresh lease and the index's one writer, and who takes over when one of
them is killed. A refresh on one replica reaches the others within the read-consistency interval.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest

from bot.slack import blocks
from bot.slack.listeners import REFRESH_BUSY_TEXT, REFRESH_STARTED_TEXT
from knowledge.index import KnowledgeIndex
from tests.conftest import SAMPLE_KNOWLEDGE
from tests.emulators.anthropic_api import AnthropicEmulator, Reply
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_payloads import (
    CHANNEL_ID,
    app_mention_event,
    block_actions_payload,
    event_callback,
    form_body,
    interactive_body,
    json_body,
    slash_command_form,
)
from tests.engines.cluster import Replica, migrate, post, replies_in, start_replicas, stop_replicas, wait_ready
from tests.test_slack_e2e import ADMIN, ANSWERABLE, ESCALATION_CHANNEL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPLICAS = 3
EVENTS = 200
REPLICA_TIMEOUT = 8.0  # seconds without a heartbeat before a replica's questions may be taken over
LLM_KEY = "sk-ant-test-replicas"
SLOW_MARKER = "(kill this replica)"
CONSISTENCY_SECONDS = 2.0  # SUPPORTBOT_READ_CONSISTENCY_SECONDS of the replicas
NEW_DOC = "zorblax-surcharge.md"  # in the knowledge only once /kb-refresh has run
NEW_QUESTION = "What is the Zorblax lunar invoice surcharge?"


async def wait_until(condition, timeout: float, what: str, replicas: list[Replica]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for replica in replicas:
            assert replica.process.poll() is None or replica.process.returncode == -9, replica.log_tail()
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.5)


@pytest.fixture
async def cluster(tmp_path, sample_data_dir, postgres_server, s3_index_uri, s3_server):
    """Three replicas on one fresh database, migrated by `supportbot db upgrade`, reading the sample
    index from a bucket; their sources add one new article at the next refresh."""
    database_url = postgres_server.create_database()
    assert "applied 0001_initial" in migrate(database_url)
    s3_server.upload(sample_data_dir / "index", s3_index_uri)
    extra = tmp_path / "new-knowledge"
    extra.mkdir()
    (extra / NEW_DOC).write_text(
        "# Zorblax lunar invoice surcharge\n\nThe Zorblax lunar invoice surcharge is 7 percent, added to "
        "every invoice sent from a lunar office. It shows as its own line on the invoice.\n",
        encoding="utf-8",
    )
    async with SlackEmulator() as emu, AnthropicEmulator(api_key=LLM_KEY) as llm:
        slowed: list[bool] = []

        def first_slow_question(body: dict) -> bool:  # only the first try of the marked question hangs
            if SLOW_MARKER in json.dumps(body) and not slowed:
                slowed.append(True)
                return True
            return False

        llm.when(first_slow_question, Reply(delay=120))
        settings = {
            "SUPPORTBOT_REPLICA_TIMEOUT_SECONDS": str(REPLICA_TIMEOUT),
            "SUPPORTBOT_USER_RATE_PER_MINUTE": "100000",  # one test user asks everything
            "SUPPORTBOT_GLOBAL_CONCURRENCY": "24",
            "SUPPORTBOT_SHUTDOWN_DRAIN_SECONDS": "5",
            "SUPPORTBOT_ESCALATION_CHANNEL": ESCALATION_CHANNEL,
            "SUPPORTBOT_ADMIN_USERS": ADMIN,
            "ANTHROPIC_API_KEY": LLM_KEY,
            "ANTHROPIC_BASE_URL": llm.base_url,
            "SUPPORTBOT_INDEX_URI": s3_index_uri,
            "SUPPORTBOT_READ_CONSISTENCY_SECONDS": str(CONSISTENCY_SECONDS),
            "SUPPORTBOT_SOURCES": f"{SAMPLE_KNOWLEDGE},{extra}",
            **s3_server.environ(),
        }
        replicas = start_replicas(REPLICAS, tmp_path, sample_data_dir, emu.api_url, database_url, **settings)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                await wait_ready(replicas, session)
                yield replicas, emu, llm, session, database_url, s3_index_uri
        finally:
            stop_replicas(replicas)


async def test_three_replicas_answer_once_count_every_vote_and_share_the_refresh_lease(cluster):
    from bot.postgres.store import PostgresStore

    replicas, emu, llm, session, database_url, s3_index_uri = cluster
    store = PostgresStore(database_url)
    gate = asyncio.Semaphore(40)  # a load balancer's worth of connections at once

    async def send(replica: Replica, body: bytes, content_type: str, **headers) -> int:
        async with gate:
            status, _ = await post(session, replica, body, content_type, **headers)
            return status

    # 1. 200 questions round-robin, each also retried to another replica: answered once each.
    mentions = [app_mention_event(f"{ANSWERABLE} (question {n})") for n in range(EVENTS)]
    sends = []
    for n, mention in enumerate(mentions):
        body = json_body(event_callback(mention, event_id=f"Ev{uuid.uuid4().hex[:10].upper()}"))
        sends.append(send(replicas[n % REPLICAS], body, "application/json"))
        retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
        sends.append(send(replicas[(n + 1) % REPLICAS], body, "application/json", **retry))
    started = time.monotonic()
    assert set(await asyncio.gather(*sends)) == {200}
    await wait_until(lambda: all(replies_in(emu, m["ts"]) for m in mentions), 600, "every question answered", replicas)
    answered_in = time.monotonic() - started
    await asyncio.sleep(3)  # a duplicate would arrive now
    counts = {m["ts"]: len(replies_in(emu, m["ts"])) for m in mentions}
    assert set(counts.values()) == {1}, {ts: c for ts, c in counts.items() if c != 1}
    rows = await asyncio.to_thread(store.interactions)
    assert len(rows) == EVENTS and len({row["thread_ts"] for row in rows}) == EVENTS
    print(f"{EVENTS} questions (+{EVENTS} retries) over {REPLICAS} replicas answered in {answered_in:.1f} s")

    # 2. 200 votes over the replicas: 200 rows.
    by_thread = {row["thread_ts"]: row["interaction_id"] for row in rows}
    clicks = []
    for n, mention in enumerate(mentions):
        [reply] = replies_in(emu, mention["ts"])
        payload = block_actions_payload(
            blocks.FEEDBACK_ACTION,
            f"{'up' if n % 2 else 'down'}:{by_thread[mention['ts']]}",
            user=f"U0VOTER{n:03d}",
            message_ts=reply["ts"],
            thread_ts=mention["ts"],
        )
        payload["actions"][0]["type"] = "feedback_buttons"
        clicks.append(send(replicas[n % REPLICAS], interactive_body(payload), "application/x-www-form-urlencoded"))
    assert set(await asyncio.gather(*clicks)) == {200}
    await wait_until(lambda: len(emu.calls_to("chat.postEphemeral")) >= EVENTS, 120, "every vote thanked", replicas)
    votes = [row for row in await asyncio.to_thread(store.feedback) if row["kind"] == "vote"]
    assert len(votes) == EVENTS and len({row["interaction_id"] for row in votes}) == EVENTS

    # 3. /kb-refresh on two replicas at once: one refreshes, the other says a refresh is running.
    bucket = KnowledgeIndex(s3_index_uri, read_consistency_seconds=0)  # the shared index, as a reader
    old_version = await asyncio.to_thread(lambda: bucket.version)
    commands = [
        form_body(
            slash_command_form("/kb-refresh", user_id=ADMIN, channel_id=CHANNEL_ID, response_url=emu.response_url())
        )
        for _ in range(2)
    ]
    before = len(emu.responses)
    await asyncio.gather(
        *(send(replicas[n + 1], body, "application/x-www-form-urlencoded") for n, body in enumerate(commands))
    )
    await emu.wait_for_response(before + 2, timeout=120)
    said = sorted(str(response.get("text")) for response in emu.responses[before:])
    assert said == sorted([REFRESH_STARTED_TEXT, REFRESH_BUSY_TEXT]), said

    # 3b. The refresh wrote a new version to the bucket: once the consistency interval has passed,
    # every replica answers from it (no restart), and finds the article it added.
    def announced() -> list:
        return [c for c in emu.calls_to("chat.postMessage") if "Knowledge refreshed" in str(c.args.get("text"))]

    await wait_until(announced, 300, "the refresh announced", replicas)
    new_version = await asyncio.to_thread(lambda: bucket.version)
    assert new_version > old_version
    assert NEW_DOC in {doc for _, doc in await asyncio.to_thread(bucket.doc_hashes)}
    await asyncio.sleep(CONSISTENCY_SECONDS)
    asked = [app_mention_event(f"{NEW_QUESTION} (replica {replica.n})") for replica in replicas]
    for replica, mention in zip(replicas, asked):
        assert await send(replica, json_body(event_callback(mention)), "application/json") == 200
    await wait_until(lambda: all(replies_in(emu, m["ts"]) for m in asked), 120, "the new questions answered", replicas)
    by_thread = {row["thread_ts"]: row for row in await asyncio.to_thread(store.interactions)}
    for mention in asked:
        row = by_thread[mention["ts"]]
        retrieved = row["retrieved"] if isinstance(row["retrieved"], list) else json.loads(row["retrieved"])
        assert row["index_version"] == new_version, (row["index_version"], new_version)
        assert NEW_DOC in {chunk["doc_id"] for chunk in retrieved}

    # 4. kill -9 a replica mid-answer: Slack's retry reaches another replica and is answered once.
    victim, survivor = replicas[0], replicas[1]
    mention = app_mention_event(f"{ANSWERABLE} {SLOW_MARKER}")
    body = json_body(event_callback(mention))
    calls_before = llm.calls
    assert await send(victim, body, "application/json") == 200
    await wait_until(lambda: llm.calls > calls_before, 60, "the victim asked the LLM", replicas)
    victim.process.kill()
    victim.process.wait()
    assert await send(survivor, body, "application/json", **{"X-Slack-Retry-Num": "1"}) == 200
    await asyncio.sleep(1)
    assert replies_in(emu, mention["ts"]) == []  # the dead owner's heartbeat is still fresh: not yet
    await asyncio.sleep(REPLICA_TIMEOUT)
    assert await send(survivor, body, "application/json", **{"X-Slack-Retry-Num": "2"}) == 200
    await wait_until(lambda: replies_in(emu, mention["ts"]), 120, "the retry answered", replicas)
    await asyncio.sleep(3)
    assert len(replies_in(emu, mention["ts"])) == 1
    await store.aclose()
