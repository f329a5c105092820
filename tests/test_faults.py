"""Faults, through the real protocols: the bot's HTTP endpoint with signed Slack requests, the real
slack_sdk against the Slack emulator, the real `anthropic` SDK against the Anthropic emulator, real
processes killed with SIGKILL, and real read-only / full filesystems where the machine allows it.

The rule under test everywhere: a fault costs the user quality (the marked extractive fallback, an
escalation, an apology), never silence, a duplicate, a lost vote, or a crash loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bot.engine.pipeline import FALLBACK_NOTE
from bot.slack import blocks
from tests.conftest import ROOT, SAMPLE_KNOWLEDGE
from tests.emulators.anthropic_api import AnthropicEmulator
from tests.emulators.processes import stop_gracefully
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_payloads import CHANNEL_ID, app_mention_event, block_actions_payload
from tests.test_slack_e2e import ANSWERABLE, ESCALATION_CHANNEL, SECRET, BotUnderTest, running_bot

pytestmark = pytest.mark.timeout(240)

QUESTIONS = ["How do I create an API key?", "How do I refund a payment?", "How do I export my data?"]
LLM_KEY = "sk-ant-test-faults"
# What /metrics must carry (issue 6): events, answers, escalations, feedback by rating, latency per
# stage, LLM tokens and cost, prompt-cache read ratio, refreshes, plus ack time and loop lag.
PRODUCTION_SERIES = (
    "events_received",
    "answers",
    "escalations",
    "feedback",
    "stage_seconds",
    "llm_tokens",
    "llm_cost_usd",
    "llm_prompt_cache_read_ratio",
    "refreshes",
    "refresh_documents",
    "last_refresh_timestamp_seconds",
    "event_ack_seconds",
    "event_loop_lag_seconds",
)


def claude(llm: AnthropicEmulator, **more) -> dict:
    """Settings overrides that put the bot on the Claude path, against the emulator."""
    return {"anthropic_api_key": SecretStr(LLM_KEY), "anthropic_base_url": llm.base_url, **more}


async def metric_samples(bot: BotUnderTest) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as Prometheus parses it; families without samples as (name, None)."""
    async with bot.session.get(f"{bot.base_url}/metrics") as resp:
        text = await resp.text()
    got: dict[tuple[str, tuple | None], float] = {}
    for family in text_string_to_metric_families(text):
        got[(family.name, None)] = len(family.samples)
        got.update({(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples})
    return got


def thread_text(calls) -> str:
    return json.dumps([call.args for call in calls])


# --------------------------------------------------------------------------- the LLM is overloaded


async def test_sustained_529_from_the_llm_gives_the_marked_fallback_then_recovers(
    tmp_path, sample_settings, engine_parts
):
    async with AnthropicEmulator() as llm:
        llm.always_fail(529, retry_after_ms=10)  # an overload storm; the SDK's retries wait 10 ms
        async with running_bot(tmp_path, sample_settings, engine_parts, **claude(llm, anthropic_max_retries=2)) as bot:
            mentions = [app_mention_event(question) for question in QUESTIONS]
            statuses = await asyncio.gather(*(bot.event(mention) for mention in mentions))
            assert [status for status, _, _ in statuses] == [200] * 3
            await bot.state.tasks.drain(timeout=60)

            assert llm.calls == 3 * 3 and set(llm.statuses) == {529}  # 1 try + 2 bounded retries each
            for mention in mentions:  # every asker hears back once: the marked fallback or a hand-off
                [reply] = bot.posts_in(CHANNEL_ID, mention["ts"])
                text = thread_text([reply])
                assert "AI answer unavailable" in text or "support team" in text, text
            rows = bot.store.interactions()
            assert len(rows) == 3 and {row["generator"] for row in rows} == {"extractive-fallback"}
            assert all("529" in row["fallback_reason"] and row["answer"].startswith(FALLBACK_NOTE) for row in rows)

            llm.always_fail(None)  # the storm passes: the next questions are answered by Claude again
            for question in (ANSWERABLE, ANSWERABLE + " Thanks!"):
                reply = await bot.reply_to(app_mention_event(question), timeout=30)
                assert "AI answer unavailable" not in json.dumps(reply)
                assert (await bot.interaction())["generator"] == "claude"

            got = await metric_samples(bot)
            families = {name for name, labels in got if labels is None}
            assert {f"supportbot_{series}" for series in PRODUCTION_SERIES} <= families, {
                f"supportbot_{series}" for series in PRODUCTION_SERIES
            } - families
            assert got[("supportbot_event_loop_lag_seconds_count", ())] > 0
            # Haiku 4.5 caches nothing under 4,096 tokens: no breakpoint is set, so nothing is read back
            assert got[("supportbot_llm_prompt_cache_read_ratio", ())] == 0
            assert (
                got[
                    (
                        "supportbot_answers_total",
                        (("decision", rows[0]["decision"]), ("generator", "extractive-fallback")),
                    )
                ]
                >= 1
            )
            assert (
                sum(
                    v
                    for (name, labels), v in got.items()
                    if name == "supportbot_answers_total" and ("generator", "extractive-fallback") in labels
                )
                == 3
            )
            assert got[("supportbot_llm_tokens_total", (("kind", "output"),))] > 0
            assert got[("supportbot_llm_cost_usd_total", ())] > 0
            await bot.state.pipeline.aclose()


# --------------------------------------------------------------------------- Slack rate-limits the bot


async def test_slack_429_with_retry_after_still_delivers_the_answer_exactly_once(slack_bot_factory):
    async with slack_bot_factory() as bot:
        bot.emu.rate_limit("chat.postMessage", times=2, retry_after=1)
        mention = app_mention_event(ANSWERABLE)
        started = time.monotonic()
        await bot.event(mention)
        calls = await bot.emu.wait_for("chat.postMessage", 3, timeout=30)
        waited = time.monotonic() - started
        await bot.state.tasks.drain(timeout=20)
        assert [call.status for call in bot.emu.calls_to("chat.postMessage")] == [429, 429, 200]
        assert waited >= 2.0  # Retry-After: 1 was honoured, twice
        delivered = [call for call in bot.posts_in(CHANNEL_ID, mention["ts"]) if call.status == 200]
        assert len(delivered) == 1 and calls[2].args["blocks"] == calls[0].args["blocks"]
        assert len(bot.store.interactions()) == 1


@pytest.fixture
def slack_bot_factory(tmp_path, sample_settings, engine_parts):
    return lambda **overrides: running_bot(tmp_path, sample_settings, engine_parts, **overrides)


# --------------------------------------------------------------------------- killed during a refresh


def small_kb(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("api/api-keys.md", "api/rate-limits.md", "security/single-sign-on.md"):
        if (SAMPLE_KNOWLEDGE / name).exists():
            shutil.copy(SAMPLE_KNOWLEDGE / name, folder / Path(name).name)
    assert (folder / "api-keys.md").exists()
    return folder


def subprocess_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTBOT_", "SLACK_", "ANTHROPIC_"))}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SUPPORTBOT_DATA_DIR": str(data_dir),
    }


def lock_is_held(lock: Path) -> bool:
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@pytest.mark.slow  # kills a real refresh subprocess, then starts the bot on what it left
async def test_bot_starts_and_answers_after_a_refresh_was_killed(tmp_path, sample_settings, engine_parts, embedder):
    from knowledge.index import KnowledgeIndex
    from knowledge.search import Searcher

    kb, data_dir = small_kb(tmp_path / "kb"), tmp_path / "data"
    own = sample_settings.model_copy(update={"data_dir": data_dir, "sources": [str(kb)]})
    await KnowledgeIndex.from_settings(own, embedder).refresh([str(kb)])
    before = KnowledgeIndex.from_settings(own, embedder)
    version, rows = before.version, before.count_rows()

    for i in range(150):  # enough new text that the refresh is still embedding when it is killed
        (kb / f"bulk{i}.md").write_text(f"# Bulk {i}\n" + f"Paragraph {i} on ledger reconciliation. " * 30)
    refresh = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "refresh",
        "--source",
        str(kb),
        "--progress",
        cwd=tmp_path,
        env=subprocess_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen = b""
    try:  # kill it mid-embedding: the progress bar shows chunks done, the commit has not happened
        async with asyncio.timeout(150):
            # the bar counts chunks as they stream in ("embedding: 32chunk"), or "N%| 32/150" with a total
            while not re.search(rb"embedding: +(?:\d+%.*?\| *)?[1-9]\d*(?:/\d+| ?chunk)", seen):
                piece = await refresh.stderr.read(4096)
                assert piece, f"the refresh ended before it could be killed: {seen[-2000:]!r}"
                seen += piece
        assert lock_is_held(data_dir / "index" / "refresh.lock")
    finally:
        refresh.kill()
        await refresh.wait()

    index = KnowledgeIndex.from_settings(own, embedder)  # a fresh process would open it like this
    parts = {**engine_parts, "index": index, "searcher": Searcher(index)}
    async with running_bot(tmp_path, own, parts) as bot:
        async with bot.session.get(f"{bot.base_url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
        mention = app_mention_event(ANSWERABLE)
        _, reply = await bot.next_post(bot.event(mention), timeout=30)
        assert reply.args["thread_ts"] == mention["ts"]
        logged = await bot.interaction()
        assert logged["decision"] in ("answer", "answer_with_caveat"), logged["reasons"]
        assert logged["index_version"] == version and index.count_rows() == rows
        assert any(
            "api-keys" in citation["url"] or "api-keys" in citation["doc_id"] for citation in logged["citations"]
        )


# --------------------------------------------------------------------------- many clicks at once


async def test_200_concurrent_feedback_clicks_are_200_rows(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts) as bot:
        _, reply = await bot.next_post(bot.event(app_mention_event(ANSWERABLE)))
        iid = (await bot.interaction())["interaction_id"]
        voters = {f"U0VOTER{n:03d}": ("up" if n % 3 else "down") for n in range(200)}

        def click(user: str, rating: str) -> dict:
            payload = block_actions_payload(
                blocks.FEEDBACK_ACTION,
                f"{rating}:{iid}",
                user=user,
                message_ts=reply.response["ts"],
                thread_ts=reply.args["thread_ts"],
            )
            payload["actions"][0]["type"] = "feedback_buttons"
            return payload

        statuses = await asyncio.gather(*(bot.click(click(user, rating)) for user, rating in voters.items()))
        assert statuses == [200] * 200
        await bot.state.tasks.drain(timeout=120)

        votes = {row["user"]: row["rating"] for row in bot.store.feedback() if row["interaction_id"] == iid}
        assert votes == voters
        thanked = {call.args["user"] for call in bot.emu.calls_to("chat.postEphemeral")}
        assert thanked == set(voters)
        got = await metric_samples(bot)
        ups = sum(rating == "up" for rating in voters.values())
        assert got[("supportbot_feedback_total", (("rating", "up"),))] == ups
        assert got[("supportbot_feedback_total", (("rating", "down"),))] == 200 - ups


# --------------------------------------------------------------------------- probes and a broken data dir


async def test_readyz_names_what_is_missing_until_the_index_exists(tmp_path, sample_settings, engine_parts, embedder):
    from knowledge.index import KnowledgeIndex
    from knowledge.search import Searcher

    own = sample_settings.model_copy(update={"data_dir": tmp_path / "data"})
    index = KnowledgeIndex.from_settings(own, embedder)
    async with running_bot(tmp_path, own, {**engine_parts, "index": index, "searcher": Searcher(index)}) as bot:
        async with bot.session.get(f"{bot.base_url}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503 and body["ready"] is False and body["not_ready"] == ["index"]
            assert "supportbot refresh" in body["checks"]["index"]
            assert body["checks"]["embedding_model"] == "ok" and body["checks"]["data_dir"] == "ok"
        async with bot.session.get(f"{bot.base_url}/healthz") as resp:
            assert resp.status == 200  # alive and writable: not ready is not unhealthy
        await index.refresh([str(small_kb(tmp_path / "kb"))])
        async with bot.session.get(f"{bot.base_url}/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["not_ready"] == []


async def test_unusable_data_dir_fails_the_health_check_and_the_bot_still_replies(tmp_path, sample_settings, embedder):
    """Works everywhere, root or not: the data dir's parent is a regular file (ENOTDIR)."""
    from knowledge.index import KnowledgeIndex
    from knowledge.search import Searcher

    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    broken = tmp_path / "not-a-dir" / "data"
    own = sample_settings.model_copy(update={"data_dir": broken})
    index = KnowledgeIndex.from_settings(own, embedder)
    async with running_bot(tmp_path, own, {"index": index, "searcher": Searcher(index), "embedder": embedder}) as bot:
        bot.store.logs_dir = broken / "logs"  # the interaction log lives in the data dir too
        for _ in range(3):  # it keeps answering probes: the process does not die over it
            async with bot.session.get(f"{bot.base_url}/healthz") as resp:
                body = await resp.json()
                assert resp.status == 503 and body["ok"] is False
                assert str(broken) in body["error"] and "Not a directory" in body["error"]
        async with bot.session.get(f"{bot.base_url}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503 and set(body["not_ready"]) == {"index", "data_dir"}
        mention = app_mention_event(ANSWERABLE)
        await bot.event(mention)
        await bot.state.tasks.drain(timeout=30)
        [told] = bot.posts_in(CHANNEL_ID, mention["ts"])  # an honest reply, not silence
        assert "can't search the knowledge base" in thread_text([told]) or "support team" in thread_text([told])


def can_mount_privately() -> bool:
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return False
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || mount -t tmpfs -o size=64k tmpfs /tmp",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(
    not can_mount_privately(),
    reason="needs unshare -m and mount (CAP_SYS_ADMIN) for a real "
    "read-only / full filesystem; test_unusable_data_dir_... covers the unprivileged case",
)
async def test_full_then_read_only_data_dir_fails_health_without_a_crash_loop(tmp_path, sample_data_dir):
    """`supportbot serve` in its own mount namespace, its data dir a 24 MB tmpfs holding the index:
    fill it (ENOSPC), empty it, remount it read-only (EROFS). Health follows; the process lives on
    and keeps answering from the index it can still read."""
    data_dir, port = tmp_path / "data", free_port()
    data_dir.mkdir()
    log_path = tmp_path / "server.log"
    async with SlackEmulator() as emu:
        env = {
            **subprocess_env(data_dir),
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SECRET,
            "SUPPORTBOT_SLACK_API_URL": emu.api_url,
            "SUPPORTBOT_ESCALATION_CHANNEL": ESCALATION_CHANNEL,
        }
        script = (
            f'mount -t tmpfs -o size=24m tmpfs "{data_dir}" && cp -a "{sample_data_dir}/index" "{data_dir}/" '
            f'&& exec "{sys.executable}" -m bot.cli serve --host 127.0.0.1 --port {port}'
        )
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=log,
            )

        def in_namespace(command: str) -> None:
            subprocess.run(
                ["nsenter", "-t", str(server.pid), "-m", "sh", "-c", command], capture_output=True, timeout=60
            )

        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                bot = BotUnderTest(emu, None, base, session, None)

                async def probe(path: str) -> tuple[int, dict]:
                    async with session.get(base + path) as resp:
                        return resp.status, await resp.json()

                async def mention_is_answered() -> None:
                    mention = app_mention_event(ANSWERABLE)
                    _, reply = await bot.next_post(bot.event(mention), timeout=30)
                    assert reply.args["thread_ts"] == mention["ts"]
                    assert "context_actions" in json.dumps(reply.args["blocks"])  # a real answer

                deadline = time.monotonic() + 150
                while True:
                    assert server.poll() is None, log_path.read_text()[-3000:]
                    try:
                        if (await probe("/readyz"))[0] == 200:
                            break
                    except aiohttp.ClientConnectionError:
                        pass
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    await asyncio.sleep(0.25)
                assert (await probe("/healthz"))[0] == 200

                in_namespace(f'cat /dev/zero > "{data_dir}/filler"')  # stops at ENOSPC
                status, body = await probe("/healthz")
                assert status == 503 and "No space left on device" in body["error"], body
                await mention_is_answered()  # reads still work; the interaction log cannot be written

                in_namespace(f'rm -f "{data_dir}/filler"')  # space again: healthy without a restart
                assert (await probe("/healthz"))[0] == 200

                in_namespace(f'mount -o remount,ro "{data_dir}"')
                status, body = await probe("/healthz")
                assert status == 503 and "Read-only file system" in body["error"], body
                status, body = await probe("/readyz")
                assert status == 503 and body["not_ready"] == ["data_dir"]
                await mention_is_answered()
                assert server.poll() is None  # still the same process: no crash, no restart
        finally:
            stop_gracefully(server)
    logged = log_path.read_text()
    assert "No space left on device" in logged and "Read-only file system" in logged
    assert "health check failed: data directory" in logged
