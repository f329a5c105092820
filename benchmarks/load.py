"""Load test of the real bot: `supportbot serve` in a subprocess, signed Slack events over HTTP.

    python benchmarks/load.py                      # 500 mentions, 50 in flight, LLM answers after 1 s
    python benchmarks/load.py --events 100 --in-flight 20 --json-out /tmp/load.json
    python benchmarks/load.py --replicas 3           # three replicas sharing a throwaway PostgreSQL
    python benchmarks/load.py --replicas 1 --postgres  # the same, one replica (the scaling baseline)

What runs:
- the bot exactly as deployed: `python -m bot.cli serve` (its own process, so the memory figure is
  the bot's alone), over an index of examples/knowledge built by `supportbot refresh`;
- the Anthropic emulator as its own process (`python -m tests.emulators.anthropic_api --delay 1`),
  with ANTHROPIC_API_KEY set so every answer takes the Claude path and waits 1 s for the "model";
- the Slack emulator in this process: the bot's Web API calls land there, and each answer's
  `chat.postMessage` is timestamped as it arrives;
- N workers (closed loop, `--in-flight`), each sending a signed `app_mention`, then waiting for its
  answer before sending the next: 50 conversations in flight at every moment.

Rate limits: every event comes from a distinct user (the per-user limit of 6/min never applies)
in one of 25 channels, and the global cap on answers in flight is raised to `--global-concurrency`
(default 64, above the 50 in flight) for the run, so no one is queued; with the default of 8 the
bot would answer at most 8 at a time and tell the others they are queued.

Replicas (`--replicas N`, `--postgres`): N `supportbot serve` processes over the same index, sharing
a throwaway PostgreSQL (initdb + pg_ctl, as the tests start it) for their logs, dedupe, limits and
leases; events go round-robin, as a load balancer would send them. Metrics are summed over the
replicas; memory is the largest replica's.

Reported: Slack ack latency p50/p99 (request sent -> HTTP response), end-to-end p50/p99 (request
sent -> answer posted at the Slack emulator), throughput, event-loop lag p99 inside the server (its
`supportbot_event_loop_lag_seconds` histogram: a 10 ms timer's overshoot, diffed over the run), and
the server's peak RSS (VmHWM). Exits 1 unless every event got exactly one reply in its thread, all
through Claude, with ack p99 and loop-lag p99 under their limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.emulators.processes import stop_gracefully  # noqa: E402
from tests.emulators.slack_api import SlackEmulator  # noqa: E402
from tests.emulators.slack_payloads import app_mention_event, event_callback, json_body, sign_request  # noqa: E402
from tests.engines.cluster import migrate  # noqa: E402
from tests.engines.postgres import start_postgres  # noqa: E402

SIGNING_SECRET = "load-test-signing-secret"
BOT_TOKEN = "xoxb-load-test"
ESCALATION_CHANNEL = "C0LOADESC"
CHANNELS = [f"C0LOAD{n:02d}" for n in range(25)]
SAMPLE_CASES = ROOT / "evals" / "datasets" / "sample.jsonl"
SAMPLE_KNOWLEDGE = ROOT / "examples" / "knowledge"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def questions() -> list[str]:
    cases = [json.loads(line) for line in SAMPLE_CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [case["question"] for case in cases if case.get("answerable")]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in bytes, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def histogram(texts: list[str], name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of one histogram (one label set), summed over the
    /metrics bodies of the replicas (buckets of one histogram add up)."""
    summed: dict[float, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name == name:
                for s in family.samples:
                    if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                        summed[float(s.labels["le"])] = summed.get(float(s.labels["le"]), 0.0) + s.value
    if not summed:
        raise KeyError(name)
    return summed


def counter(texts: list[str], name: str, **labels: str) -> float:
    total = 0.0
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
    return total


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> tuple[float, float, int]:
    """Quantile of the observations made between two scrapes, interpolated inside the bucket the
    way Prometheus' histogram_quantile() does; also returns that bucket's upper bound and the count."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if not total:
        return 0.0, 0.0, 0
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower, bound, int(total)
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0), bound, int(total)
        lower, below = bound, cumulative
    return lower, float("inf"), int(total)


@dataclass
class Sent:
    ts: str
    channel: str
    sent: float  # time.time() just before the request
    acked: float = 0.0
    status: int = 0


@dataclass
class Run:
    sent: dict[str, Sent] = field(default_factory=dict)  # by message ts (= the reply's thread_ts)
    replies: dict[str, list[Any]] = field(default_factory=dict)  # thread_ts -> chat.postMessage calls
    waiters: dict[str, asyncio.Future] = field(default_factory=dict)


class Watcher:
    """Follows the emulator's call list (O(1) per call) and files each reply under its thread."""

    def __init__(self, emu: SlackEmulator, run: Run) -> None:
        self.emu, self.run, self.seen = emu, run, 0

    async def follow(self) -> None:
        while True:
            calls = self.emu.calls
            while self.seen < len(calls):
                call = calls[self.seen]
                self.seen += 1
                thread = call.args.get("thread_ts")
                if call.method == "chat.postMessage" and call.status == 200 and thread in self.run.sent:
                    self.run.replies.setdefault(thread, []).append(call)
                    waiter = self.run.waiters.pop(thread, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(call)
            await asyncio.sleep(0.002)


def reply_kind(call) -> str:
    text = json.dumps(call.args.get("blocks") or [])
    if "context_actions" in text:
        return "answer"
    if "in the queue" in (call.args.get("text") or ""):
        return "queued notice"
    return "escalation notice"


async def wait_ready(session: aiohttp.ClientSession, base: str, server: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            async with session.get(f"{base}/readyz") as resp:
                body = await resp.json()
                if resp.status == 200:
                    return body
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.25)
    raise RuntimeError(f"not ready after {timeout:.0f} s: {body}")


async def scrape(session: aiohttp.ClientSession, bases: list[str]) -> list[str]:
    """The /metrics body of every replica."""
    bodies = []
    for base in bases:
        async with session.get(f"{base}/metrics") as resp:
            bodies.append(await resp.text())
    return bodies


async def drive(
    args: argparse.Namespace,
    bases: list[str],
    emu: SlackEmulator,
    session: aiohttp.ClientSession,
    run: Run,
    count: int,
    prefix: str,
) -> tuple[float, float]:
    """`count` mentions from `args.in_flight` closed-loop workers; returns (first sent, last answered)."""
    texts = questions()
    numbers = iter(range(count))
    base_second = int(time.time())
    loop = asyncio.get_running_loop()

    async def one(n: int) -> None:
        ts = f"{base_second}.{n:06d}" if prefix == "load" else f"{base_second - 1}.{n:06d}"
        channel = CHANNELS[n % len(CHANNELS)]
        event = app_mention_event(texts[n % len(texts)], user=f"U0{prefix.upper()}{n:05d}", channel=channel, ts=ts)
        body = json_body(event_callback(event, event_id=f"Ev{prefix.upper()}{n:06d}"))
        record = Sent(ts, channel, 0.0)
        run.sent[ts] = record
        waiter = run.waiters[ts] = loop.create_future()
        record.sent = time.time()
        headers = {"Content-Type": "application/json", **sign_request(SIGNING_SECRET, body)}
        base = bases[n % len(bases)]  # round-robin, as a load balancer sends them
        async with session.post(f"{base}/slack/events", data=body, headers=headers) as resp:
            await resp.read()
            record.status, record.acked = resp.status, time.time()
        try:
            await asyncio.wait_for(waiter, args.answer_timeout)
        except TimeoutError:
            run.waiters.pop(ts, None)

    async def worker() -> None:
        for n in numbers:
            await one(n)

    first = time.time()
    await asyncio.gather(*(worker() for _ in range(args.in_flight)))
    answered = [run.replies[s.ts][0].time for s in run.sent.values() if s.ts in run.replies]
    return first, max(answered, default=time.time())


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="supportbot-load-"))
    data_dir = Path(args.data_dir) if args.data_dir else work / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTBOT_", "SLACK_", "ANTHROPIC_"))},
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SUPPORTBOT_DATA_DIR": str(data_dir),
    }
    if not (data_dir / "index").exists():
        print(f"indexing {SAMPLE_KNOWLEDGE} into {data_dir} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "bot.cli", "refresh", "--source", str(SAMPLE_KNOWLEDGE)],
            env=env,
            cwd=work,
            check=True,
            capture_output=True,
            timeout=600,
        )
    shutil.rmtree(data_dir / "logs", ignore_errors=True)  # a fresh interaction log for every run
    database = start_postgres() if args.postgres or args.replicas > 1 else None
    database_url = database.create_database() if database else None
    if database_url:
        migrate(database_url)

    llm_port, bot_port = free_port(), free_port()
    llm_log = open(work / "anthropic-emulator.log", "wb")  # noqa: SIM115 - open while the emulator runs
    llm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.emulators.anthropic_api",
            "--port",
            str(llm_port),
            "--delay",
            str(args.llm_delay),
        ],
        cwd=ROOT,
        env=env,
        stdout=llm_log,
        stderr=llm_log,
    )
    servers: list[subprocess.Popen] = []
    run, warm = Run(), Run()
    try:
        async with SlackEmulator() as emu:
            server_env = {
                **env,
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SUPPORTBOT_SLACK_API_URL": emu.api_url,
                "SUPPORTBOT_PRODUCTION": "true",
                "ANTHROPIC_API_KEY": "sk-ant-load-test",
                "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{llm_port}",
                "SUPPORTBOT_ESCALATION_CHANNEL": ESCALATION_CHANNEL,
                "SUPPORTBOT_GLOBAL_CONCURRENCY": str(args.global_concurrency),
                **({"SUPPORTBOT_DATABASE_URL": database_url} if database_url else {}),
            }
            started = time.monotonic()
            bases = []
            for n in range(args.replicas):
                port = bot_port if n == 0 else free_port()
                server_log = open(work / f"server-{n}.log", "wb")  # noqa: SIM115 - open while the server runs
                # cwd=work: no developer .env is read; everything is set above
                profile = ["-m", "cProfile", "-o", str(Path(args.profile).resolve())] if args.profile and not n else []
                servers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            *profile,
                            "-m",
                            "bot.cli",
                            "serve",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                        ],
                        cwd=work,
                        env=server_env,
                        stdout=server_log,
                        stderr=server_log,
                    )
                )
                bases.append(f"http://127.0.0.1:{port}")
            connector = aiohttp.TCPConnector(limit=args.in_flight)  # loopback only, bounded
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
                for base, server in zip(bases, servers):
                    await wait_ready(session, base, server, args.ready_timeout)
                ready_seconds = time.monotonic() - started
                rss_ready = max(proc_status(server.pid)["VmRSS"] for server in servers)
                follower = asyncio.create_task(Watcher(emu, run).follow())
                warm_follower = asyncio.create_task(Watcher(emu, warm).follow())
                await drive(args, bases, emu, session, warm, args.warm_up, "warm")  # not measured
                warm_follower.cancel()
                metrics_before = await scrape(session, bases)
                first, last = await drive(args, bases, emu, session, run, args.events, "load")
                await asyncio.sleep(0.5)  # a late duplicate would show up here
                metrics_after = await scrape(session, bases)
                follower.cancel()
                async with session.get(f"http://127.0.0.1:{llm_port}/_emulator/stats") as resp:
                    llm_stats = await resp.json()
            memories = [proc_status(server.pid) for server in servers]
            memory = {name: max(m[name] for m in memories) for name in ("VmRSS", "VmHWM")}
    finally:
        for server in servers:
            stop_gracefully(server)
        llm.kill()
        llm.wait()
        if database is not None:
            database.stop()

    sent = list(run.sent.values())
    acks = [s.acked - s.sent for s in sent if s.status == 200]
    e2e = [run.replies[s.ts][0].time - s.sent for s in sent if s.ts in run.replies]
    answered = sum(1 for s in sent if len(run.replies.get(s.ts, [])) >= 1)
    duplicates = sum(1 for s in sent if len(run.replies.get(s.ts, [])) > 1)
    kinds: dict[str, int] = {}
    for s in sent:
        for call in run.replies.get(s.ts, []):
            kinds[reply_kind(call)] = kinds.get(reply_kind(call), 0) + 1
    lag, lag_bucket, lag_samples = histogram_quantile(
        0.99,
        histogram(metrics_before, "supportbot_event_loop_lag_seconds"),
        histogram(metrics_after, "supportbot_event_loop_lag_seconds"),
    )
    lag50, _, _ = histogram_quantile(
        0.50,
        histogram(metrics_before, "supportbot_event_loop_lag_seconds"),
        histogram(metrics_after, "supportbot_event_loop_lag_seconds"),
    )
    stages = {
        stage: 1000
        * histogram_quantile(
            0.5,
            histogram(metrics_before, "supportbot_stage_seconds", stage=stage),
            histogram(metrics_after, "supportbot_stage_seconds", stage=stage),
        )[0]
        for stage in ("retrieve", "generate", "judge", "total")
    }
    by_claude = counter(metrics_after, "supportbot_answers_total", generator="claude") - counter(
        metrics_before, "supportbot_answers_total", generator="claude"
    )
    fallbacks = counter(metrics_after, "supportbot_answers_total", generator="extractive-fallback") - counter(
        metrics_before, "supportbot_answers_total", generator="extractive-fallback"
    )
    wall = last - first
    results = {
        "replicas": args.replicas,
        "store": "postgresql" if database_url else "embedded",
        "events": args.events,
        "in_flight": args.in_flight,
        "llm_delay_s": args.llm_delay,
        "global_concurrency": args.global_concurrency,
        "acked_200": len(acks),
        "answered": answered,
        "duplicates": duplicates,
        "reply_kinds": kinds,
        "answers_by_claude": by_claude,
        "extractive_fallbacks": fallbacks,
        "ack_ms": {"p50": 1000 * percentile(acks, 50), "p99": 1000 * percentile(acks, 99), "max": 1000 * max(acks)},
        "e2e_ms": {"p50": 1000 * percentile(e2e, 50), "p99": 1000 * percentile(e2e, 99), "max": 1000 * max(e2e)},
        "throughput_per_s": answered / wall if wall > 0 else 0.0,
        "wall_s": wall,
        "loop_lag_ms": {
            "p50": 1000 * lag50,
            "p99": 1000 * lag,
            "p99_bucket_le": 1000 * lag_bucket,
            "samples": lag_samples,
        },
        "server_rss_mb": {
            "after_ready": rss_ready / 2**20,
            "peak": memory["VmHWM"] / 2**20,
            "at_end": memory["VmRSS"] / 2**20,
        },
        "stage_p50_ms": stages,
        "ready_s": ready_seconds,
        "llm_calls": llm_stats.get("calls"),
        "llm_statuses": llm_stats.get("statuses"),
        "warm_up_answered": sum(1 for s in warm.sent.values() if s.ts in warm.replies),
    }

    rows = [
        ("replicas / store", f"{args.replicas} / {results['store']}"),
        ("events (signed app_mention, distinct users, 25 channels)", f"{args.events}"),
        ("in flight (closed loop) / LLM delay", f"{args.in_flight} / {args.llm_delay:g} s"),
        ("answered exactly once", f"{answered - duplicates}/{args.events} ({duplicates} duplicates)"),
        ("reply kinds", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))),
        ("answers via Claude (extractive fallbacks)", f"{by_claude:.0f} ({fallbacks:.0f})"),
        ("ack latency p50 / p99 / max", "{p50:.1f} / {p99:.1f} / {max:.1f} ms".format(**results["ack_ms"])),
        ("end-to-end p50 / p99 / max", "{p50:.0f} / {p99:.0f} / {max:.0f} ms".format(**results["e2e_ms"])),
        (
            "engine stage p50: retrieve / generate / judge / total",
            " / ".join(f"{stages[name]:.0f}" for name in ("retrieve", "generate", "judge", "total")) + " ms",
        ),
        ("throughput", f"{results['throughput_per_s']:.1f} answers/s over {wall:.1f} s"),
        (
            "event-loop lag p50 / p99 (bucket)",
            f"{1000 * lag50:.2f} / {1000 * lag:.1f} ms (<= {1000 * lag_bucket:g} ms), {lag_samples} samples",
        ),
        (
            "server RSS after ready / peak (largest replica)",
            f"{results['server_rss_mb']['after_ready']:.0f} / {results['server_rss_mb']['peak']:.0f} MB",
        ),
        ("time to /readyz 200", f"{ready_seconds:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n| {'measure'.ljust(width)} | value |\n| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")

    failures = []
    if answered - duplicates != args.events or duplicates:
        failures.append(f"{answered - duplicates}/{args.events} answered exactly once ({duplicates} duplicates)")
    if len(acks) != args.events:
        failures.append(f"only {len(acks)} of {args.events} requests got 200")
    if by_claude != args.events:
        failures.append(f"{by_claude:.0f} of {args.events} answers came from Claude")
    if results["ack_ms"]["p99"] > args.max_ack_p99_ms:
        failures.append(f"ack p99 {results['ack_ms']['p99']:.0f} ms > {args.max_ack_p99_ms:g} ms")
    if 1000 * lag > args.max_loop_lag_p99_ms:
        failures.append(f"event-loop lag p99 {1000 * lag:.1f} ms > {args.max_loop_lag_p99_ms:g} ms")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**results, "failures": failures}, indent=1) + "\n")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    if failures:
        print(f"server logs kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=50, help="concurrent conversations (closed loop)")
    parser.add_argument("--llm-delay", type=float, default=1.0, help="seconds the Anthropic emulator takes per answer")
    parser.add_argument(
        "--global-concurrency",
        type=int,
        default=64,
        help="SUPPORTBOT_GLOBAL_CONCURRENCY for the run (answers in flight in the bot)",
    )
    parser.add_argument("--replicas", type=int, default=1, help="`supportbot serve` processes, round-robin")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL even for one replica")
    parser.add_argument("--warm-up", type=int, default=10, help="unmeasured events first (connections, caches)")
    parser.add_argument("--data-dir", default=None, help="reuse an indexed data dir (its logs/ are reset)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--answer-timeout", type=float, default=60.0)
    parser.add_argument("--max-ack-p99-ms", type=float, default=1000.0, help="Slack retries after 3000 ms")
    parser.add_argument("--max-loop-lag-p99-ms", type=float, default=100.0)
    parser.add_argument("--json-out", default=None)
    parser.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="run the server under cProfile (its main thread: what runs on the event loop)",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
