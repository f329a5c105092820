"""What Claude costs per answer, today's request layout against the caching layout.

    nice python benchmarks/claude_cost.py [--questions 200] [--json]

The real pipeline (sample knowledge `examples/knowledge`, calibrated index, the real `anthropic`
SDK) answers a workload against the Anthropic emulator, which caches like the API (per-model
minimum, 5-minute TTL refreshed on read, exact prefixes, block lookback) and reports usage the
way the API does. The emulator's clock is simulated, so the workload's pacing is exact:
a follow-up comes 90 s after the answer it follows, threads start 20 s apart, and turns are replayed
in time order (other threads' first questions come between a thread's turns).

Workload (200 questions by default): 60% first questions, 40% follow-ups in the same threads.
Follow-up threads come from `evals/datasets/followups-sample.jsonl` (its thread opener, then its
follow-up); a third of them go one turn deeper with another follow-up on the same article (the
cases whose history has two user turns give natural ones). The other threads are single first
questions from `evals/datasets/sample.jsonl`, all shuffled (seed 15). Both models run the same workload: a Haiku-class
model (4,096-token minimum) and a Sonnet-class one (1,024).

Layouts: `legacy` (before issue 15: one search result per chunk, a dead marker on the contract),
`per-thread` (the previous default: only a thread's own prefix is cached), `shared` (the default:
the contract also shared across threads where `contract_pays`), each `+first` with
`SUPPORTBOT_CACHE_FIRST_QUESTIONS=true`.

Prices come from settings (`SUPPORTBOT_PRICES`, defaults from Anthropic's pricing page).
Correct, plainly: an answerable case whose answer cites at least one of its gold sources (the
emulator cites the two search results anywhere in the request that share most words with the
question, whichever turn of the layout they sit in, so correctness measures whether the layout
still hands Claude the right sources and their citations still map back); an
unanswerable case is correct when the bot does not answer it (escalates or says it cannot).

`--latency` (or `--latency-only`) also times the first visible text in Slack: signed events into
the real bot (bolt, slack_sdk) against the Slack emulator, Claude answering through the Anthropic
emulator with a 1 s time to first token and 80 output tokens/s; 24 first questions, DMs and
channel mentions alternating, with streaming on and then off. Visible = the first bot message in
the question's thread with text, in the emulator's message store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_bench import offline_settings  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bot.engine.claude import ClaudeAnswerer  # noqa: E402
from bot.engine.pipeline import Pipeline  # noqa: E402
from bot.engine.pricing import cost_usd, price_for  # noqa: E402
from bot.engine.types import Answer, Decision, Question, Turn  # noqa: E402
from bot.settings import Settings  # noqa: E402
from evals.cases import EvalCase, load_cases  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from knowledge.search import Searcher  # noqa: E402
from tests.emulators.anthropic_api import AnthropicEmulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = str(ROOT / "examples" / "knowledge")
MODELS = {"haiku-class": "claude-haiku-4-5", "sonnet-class": "claude-sonnet-4-6"}
FOLLOWUP_GAP = 90.0  # simulated seconds between an answer and its follow-up
THREAD_GAP = 20.0


@dataclass
class Ask:
    text: str
    gold: list[str]
    answerable: bool


@dataclass
class Thread:
    asks: list[Ask] = field(default_factory=list)


def workload(total: int) -> list[Thread]:
    """`total` questions: 60% first questions, 40% follow-ups, as described in the docstring."""
    firsts, followups_total = round(total * 0.6), total - round(total * 0.6)
    singles = load_cases(ROOT / "evals/datasets/sample.jsonl")
    pairs = load_cases(ROOT / "evals/datasets/followups-sample.jsonl")
    deep = followups_total // 4  # threads with two follow-ups: a third of the follow-up threads
    followup_threads = followups_total - deep
    by_gold: dict[str, list[EvalCase]] = defaultdict(list)
    for case in pairs:
        by_gold[case.gold_sources[0] if case.gold_sources else ""].append(case)
    threads: list[Thread] = []
    for i in range(followup_threads):
        case = pairs[i % len(pairs)]
        users = [t.text for t in case.history if t.role == "user"]
        thread = Thread([Ask(users[0], [], True)])
        if len(users) > 1:  # a natural deeper thread: the history's own follow-up first
            thread.asks.append(Ask(users[1], case.gold_sources, case.answerable))
        thread.asks.append(Ask(case.question, case.gold_sources, case.answerable))
        if i < deep and len(thread.asks) < 3:
            same = [c for c in by_gold[case.gold_sources[0] if case.gold_sources else ""] if c.id != case.id]
            other = same[0] if same else pairs[(i + 7) % len(pairs)]
            thread.asks.append(Ask(other.question, other.gold_sources, other.answerable))
        if i >= deep:
            thread.asks = thread.asks[:2]
        threads.append(thread)
    for i in range(firsts - followup_threads):
        case = singles[i % len(singles)]
        threads.append(Thread([Ask(case.question, case.gold_sources, case.answerable)]))
    random.Random(15).shuffle(threads)  # threads of every kind interleave, as in a channel
    return threads


def opener_gold(threads: list[Thread]) -> None:
    """A follow-up thread's opener is scored on its follow-up's gold (same topic), else unscored."""
    for thread in threads:
        if not thread.asks[0].gold and len(thread.asks) > 1:
            thread.asks[0].gold = thread.asks[1].gold


def correct(ask: Ask, answer: Answer) -> bool:
    if not ask.answerable:
        return answer.decision is Decision.ESCALATE or answer.generator == "claude" and "couldn't find" in answer.text
    cited = {c.doc_url or c.url.split("#")[0] for c in answer.citations} | {c.url for c in answer.citations}
    return any(g in cited for g in ask.gold)


def schedule(threads: list[Thread]) -> list[tuple[float, int, int]]:
    """Every turn as (simulated seconds, thread, depth), in time order: thread n opens at n x
    `THREAD_GAP`, each follow-up `FOLLOWUP_GAP` after the turn before it (answers take no simulated
    time), so later threads' first questions come between an earlier thread's turns."""
    return sorted(
        (n * THREAD_GAP + depth * FOLLOWUP_GAP, n, depth)
        for n, thread in enumerate(threads)
        for depth in range(len(thread.asks))
    )


class SimClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# layout -> (settings it changes, whether the contract may be shared across threads in the cache)
LAYOUTS: dict[str, tuple[dict, bool]] = {
    "legacy": ({}, False),
    "per-thread": ({}, False),  # the previous default: only a thread's own prefix is cached
    "per-thread+first": ({"cache_first_questions": True}, False),
    "shared": ({}, True),  # the default: the contract is shared across threads where it pays
    "shared+first": ({"cache_first_questions": True}, True),
}


async def run(
    settings: Settings, searcher: Searcher, model: str, layout: str, threads: list[Thread]
) -> tuple[list[dict], int]:
    clock = SimClock()
    async with AnthropicEmulator(clock=clock) as emu:
        emu.cite_relevant = True  # what it cites must not depend on where a layout put each source
        claude = settings.model_copy(
            update={
                "anthropic_api_key": SecretStr("bench"),
                "anthropic_base_url": emu.base_url,
                "anthropic_model": model,
                **LAYOUTS[layout][0],
            }
        )
        generator = ClaudeAnswerer(claude, legacy_layout=layout == "legacy", clock=clock)
        if generator.layout is not None:  # the default decides by model; the previous layouts never share
            generator.layout.shares_contract = generator.layout.shares_contract and LAYOUTS[layout][1]
        pipeline = Pipeline(claude, searcher, generator=generator)
        price = price_for(model, claude.prices)
        rows: list[dict] = []
        histories: dict[int, list[Turn]] = defaultdict(list)
        for at, n, depth in schedule(threads):  # in time order: threads interleave as in a channel
            clock.now = 1_000_000.0 + at
            ask, history = threads[n].asks[depth], histories[n]
            question = Question(text=ask.text, history=list(history), channel="C0BENCH", thread_ts=f"{n}.0")
            answer = await pipeline.answer(question)
            usage = answer.usage
            rows.append(
                {
                    "kind": "first" if depth == 0 else "follow-up",
                    "input": usage.input_tokens,
                    "write": usage.cache_creation_input_tokens,
                    "read": usage.cache_read_input_tokens,
                    "output": usage.output_tokens,
                    "cost": cost_usd(usage, price),
                    "correct": correct(ask, answer),
                }
            )
            history += [Turn(role="user", text=ask.text), Turn(role="assistant", text=answer.text)]
        await pipeline.aclose()
        return rows, emu.cache.dead_breakpoints


def summarise(rows: list[dict]) -> dict:
    cost = sum(r["cost"] for r in rows)
    right = sum(r["correct"] for r in rows)
    prompt = sum(r["input"] + r["write"] + r["read"] for r in rows)
    return {
        "n": len(rows),
        "cost_per_answer": cost / len(rows) if rows else 0.0,
        "cost_per_correct": cost / right if right else float("inf"),
        "correct": right,
        "cache_read_share": sum(r["read"] for r in rows) / prompt if prompt else 0.0,
        "prompt_tokens": prompt / len(rows) if rows else 0.0,
    }


async def wait_until(condition: Callable[[], bool], deadline: float, what: str, every: float) -> None:
    """Poll `condition` every `every` seconds until it holds; past `deadline` (perf_counter), fail."""
    while not condition():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def latency(settings: Settings, parts: dict, threads: list[Thread], count: int = 24) -> dict:
    """Seconds from a signed Slack event to the first answer text in the Slack emulator's message
    store, through the real bot (bolt, slack_sdk, the configured streaming) and the real
    `anthropic` SDK against an emulator with a 1 s time to first token and 80 output tokens/s.
    Questions alternate between DMs and channel mentions, one at a time; the Slack emulator
    enforces its published rate tiers (chat.startStream is Tier 2), so a stream Slack refuses
    falls back to one post and is measured as such. Also: when the working indicator (the eyes
    reaction) appeared."""
    import aiohttp
    from aiohttp import web

    from bot.engine.pipeline import Pipeline as Engine
    from bot.slack.app import create_app, create_web_app
    from bot.store import InteractionStore
    from tests.emulators.slack_api import SlackEmulator
    from tests.emulators.slack_payloads import (
        CHANNEL_ID,
        app_mention_event,
        event_callback,
        json_body,
        message_event,
        sign_request,
    )

    secret = "bench-signing-secret"
    visible, working, streamed = [], [], 0
    async with SlackEmulator() as slack, AnthropicEmulator(ttft=1.0, tokens_per_second=80.0) as claude_emu:
        bot_settings = settings.model_copy(
            update={
                "anthropic_api_key": SecretStr("bench"),
                "anthropic_base_url": claude_emu.base_url,
                "anthropic_model": MODELS["sonnet-class"],
                "slack_bot_token": SecretStr("xoxb-bench"),
                "slack_signing_secret": SecretStr(secret),
                "slack_api_url": slack.api_url,
                "user_rate_per_minute": 1000,  # one emulated asker stands for 24 people: never queued
            }
        )
        engine = Engine.from_settings(bot_settings, index=parts["index"], searcher=parts["searcher"])
        with tempfile.TemporaryDirectory() as logs:
            state = create_app(bot_settings, engine, InteractionStore(Path(logs)), parts["index"])
            runner = web.AppRunner(create_web_app(state))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
            async with aiohttp.ClientSession() as session:
                for n, thread in enumerate(threads[:count]):
                    channel = "D0DIRECT" if n % 2 == 0 else CHANNEL_ID
                    event = (message_event if channel.startswith("D") else app_mention_event)(
                        thread.asks[0].text, channel=channel
                    )
                    body = json_body(event_callback(event))
                    reacted = len(slack.calls_to("reactions.add"))
                    began, began_wall = time.perf_counter(), time.time()
                    headers = {"Content-Type": "application/json", **sign_request(secret, body)}
                    async with session.post(url, data=body, headers=headers) as response:
                        assert response.status == 200, response.status

                    def answer_shown(channel=channel, event=event) -> bool:
                        return any(
                            m.get("bot_id") and m.get("text") and m.get("thread_ts") == event["ts"]
                            for m in slack.thread(channel, event["ts"])
                        )

                    await wait_until(answer_shown, began + 60, f"answer text in Slack for {event['ts']}", 0.005)
                    visible.append(time.perf_counter() - began)
                    reactions = slack.calls_to("reactions.add")[reacted:]
                    if reactions:
                        working.append(reactions[0].time - began_wall)

                    # the next question only once this one is done (its outcome reaction, or its log)
                    def finished(event=event, n=n) -> bool:
                        return (
                            any(
                                c.args.get("timestamp") == event["ts"] and c.args.get("name") != "eyes"
                                for c in slack.calls_to("reactions.add")
                            )
                            or len(state.responder.store.interactions()) > n
                        )

                    await wait_until(finished, began + 120, f"question {event['ts']} to finish", 0.1)
                    streamed += any(c.args.get("thread_ts") == event["ts"] for c in slack.calls_to("chat.startStream"))
                    print(f"latency {n + 1}/{count}: {visible[-1]:.2f} s", file=sys.stderr)
            await runner.cleanup()
        await engine.aclose()
    return {
        "n": len(visible),
        "streamed": streamed,
        "stream_answers": settings.stream_answers,
        "visible_p50": statistics.median(visible),
        "visible_p90": statistics.quantiles(visible, n=10)[-1],
        "working_p50": statistics.median(working) if working else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--latency", action="store_true", help="also time first visible text in Slack")
    parser.add_argument("--latency-only", action="store_true", help="only the Slack latency (implies --latency)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.latency = args.latency or args.latency_only
    threads = workload(args.questions)
    opener_gold(threads)
    with tempfile.TemporaryDirectory() as tmp:
        from bot.engine.calibration import refresh_calibrated

        settings = offline_settings(Path(tmp), SOURCE)
        index = KnowledgeIndex.from_settings(settings)
        await refresh_calibrated(index, [SOURCE], settings)
        searcher = Searcher.from_settings(settings, index)
        report: dict = {"questions": sum(len(t.asks) for t in threads), "threads": len(threads), "models": {}}
        for label, model in MODELS.items() if not args.latency_only else ():
            for layout in LAYOUTS:
                rows, dead = await run(settings, searcher, model, layout, threads)
                kinds = {kind: summarise([r for r in rows if r["kind"] == kind]) for kind in ("first", "follow-up")}
                report["models"].setdefault(label, {})[layout] = {
                    "all": summarise(rows),
                    **kinds,
                    "dead_breakpoints": dead,
                }
        if args.latency:
            parts = {"index": index, "searcher": searcher}
            for stream in (True, False):
                report.setdefault("latency", []).append(
                    await latency(settings.model_copy(update={"stream_answers": stream}), parts, threads)
                )
            if args.latency_only:
                report["models"] = {}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['questions']} questions in {report['threads']} threads (model, layout, request type)")
    print(
        f"{'model':13} {'layout':16} {'type':9} {'n':>4} {'$/answer':>10} {'$/correct':>10} {'correct':>7} "
        f"{'cache-read':>10} {'tokens':>7} {'vs legacy':>9}"
    )
    for label, layouts in report["models"].items():
        for layout, parts in layouts.items():
            for kind in ("first", "follow-up", "all"):
                s = parts[kind]
                base = layouts["legacy"][kind]
                ratio = s["cost_per_correct"] / base["cost_per_correct"] if base["cost_per_correct"] else 0
                print(
                    f"{label:13} {layout:16} {kind:9} {s['n']:>4} {s['cost_per_answer'] * 1000:>9.4f}m "
                    f"{s['cost_per_correct'] * 1000:>9.4f}m {s['correct']:>7} {s['cache_read_share']:>10.1%} "
                    f"{s['prompt_tokens']:>7.0f} {ratio:>9.3f}"
                )
            print(
                f"{label:13} {layout:16} dead breakpoints (prefix below the model's minimum): {parts['dead_breakpoints']}"
            )
    print("($ in thousandths of a dollar: m = $0.001; 'vs legacy' = cost per correct answer / legacy's)")
    for lat in report.get("latency", []):
        print(
            f"Slack, TTFT 1 s, 80 tok/s, streaming {'on ' if lat['stream_answers'] else 'off'}: {lat['n']} first "
            f"questions ({lat['streamed']} streamed): answer text visible p50 {lat['visible_p50']:.2f} s "
            f"(p90 {lat['visible_p90']:.2f}); working indicator p50 "
            + (f"{lat['working_p50']:.2f} s" if lat["working_p50"] is not None else "none seen")
        )


if __name__ == "__main__":
    asyncio.run(main())
