"""`supportbot serve` replicas as real subprocesses, for the multi-replica test and `benchmarks/load.py`.

Each replica gets its own copy of an index (as separate machines would), unless the settings name a
shared one on object storage (SUPPORTBOT_INDEX_URI), and, when a database URL is given, the shared
PostgreSQL; without one it runs embedded (its logs in its own data dir).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.emulators.processes import stop_gracefully
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_payloads import CHANNEL_ID, sign_request
from tests.engines.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-signing-secret"


@dataclass
class Replica:
    n: int
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def replica_env(data_dir: Path, slack_api_url: str, database_url: str | None, **settings: str) -> dict[str, str]:
    """The environment of one replica: no inherited bot settings, offline, and `settings` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTBOT_", "SLACK_", "ANTHROPIC_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",  # several replicas on two shared cores
            "SUPPORTBOT_DATA_DIR": str(data_dir),
            "SUPPORTBOT_SLACK_API_URL": slack_api_url,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SECRET,
        }
    )
    if database_url:
        env["SUPPORTBOT_DATABASE_URL"] = database_url
    env.update(settings)
    return env


def migrate(database_url: str) -> str:
    """`supportbot db upgrade`, as an operator runs it; returns its output."""
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "upgrade"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SUPPORTBOT_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"supportbot db upgrade failed: {done.stderr}")
    return done.stdout


def start_replicas(
    count: int, workdir: Path, index_from: Path, slack_api_url: str, database_url: str | None, **settings: str
) -> list[Replica]:
    replicas: list[Replica] = []
    for n in range(count):
        data_dir = workdir / f"replica-{n}"
        if "SUPPORTBOT_INDEX_URI" not in settings:
            shutil.copytree(index_from / "index", data_dir / "index")
        data_dir.mkdir(parents=True, exist_ok=True)
        port, log_path = free_port(), workdir / f"replica-{n}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=workdir,
                env=replica_env(data_dir, slack_api_url, database_url, **settings),
                stdout=log,
                stderr=log,
            )
        replicas.append(Replica(n, process, port, log_path))
    return replicas


def stop_replicas(replicas: list[Replica]) -> None:
    for replica in replicas:
        stop_gracefully(replica.process, grace_seconds=15)


async def wait_ready(replicas: list[Replica], session: aiohttp.ClientSession, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    for replica in replicas:
        while True:
            if replica.process.poll() is not None:
                raise RuntimeError(f"replica {replica.n} exited: {replica.log_tail()}")
            try:
                async with session.get(replica.url + "/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {replica.n} not ready: {replica.log_tail()}")
            await asyncio.sleep(0.5)


async def post(
    session: aiohttp.ClientSession, replica: Replica, body: bytes, content_type: str, **headers: str
) -> tuple[int, float]:
    """A request signed as Slack signs it; returns (HTTP status, seconds until the response)."""
    all_headers = {"Content-Type": content_type, **sign_request(SECRET, body), **headers}
    started = time.perf_counter()
    async with session.post(replica.url + "/slack/events", data=body, headers=all_headers) as resp:
        await resp.read()
        return resp.status, time.perf_counter() - started


def replies_in(emu: SlackEmulator, thread_ts: str, channel: str = CHANNEL_ID) -> list[dict]:
    """The bot's finished replies in a question's thread, posted whole or streamed (queue notices
    aside: they are not answers)."""
    return [m for m in emu.bot_replies(channel, thread_ts) if "in the queue" not in str(m.get("text"))]
