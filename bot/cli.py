"""`supportbot`: the command line. Each command is a thin shell over a public function.

Heavy libraries (torch, sentence-transformers, lancedb) are imported inside the commands that
need them, so `supportbot --help` answers at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot.settings import Settings

if TYPE_CHECKING:
    from evals.schema import EvalReport


def load_settings(data_dir: Path | None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


EXIT_GATE_BLOCKED = 3  # the eval gate kept the previous version in service
EXIT_SOURCE_FAILED = 4  # a source could not be synced; the others committed, its documents are kept


def fail(message: str, code: int = 1) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the index and logs live (default: SUPPORTBOT_DATA_DIR or ./data).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="supportbot")
def main() -> None:
    """supportbot: answers support questions in Slack from your knowledge, with sources.

    Start with `supportbot refresh` to index the knowledge, then `supportbot ask "..."`.
    """


# --------------------------------------------------------------------------- knowledge


@main.command()
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="PATH_OR_URI",
    help=(
        "A folder, file, JSONL export, page or sitemap.xml URL, a connector URI (zendesk+https://..., "
        "confluence+https://..., notion://ID, github://OWNER/REPO/PATH@REF) or a name from the sources file "
        "(repeatable). Default: supportbot-sources.yml, else SUPPORTBOT_SOURCES."
    ),
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal, for long runs).")
@click.option("--force", is_flag=True, help="Publish the new version even if the eval gate finds it worse.")
@data_dir_option
@json_option
def refresh(sources: tuple[str, ...], progress: bool | None, force: bool, data_dir: Path | None, as_json: bool) -> None:
    """Index new and changed documents, drop vanished ones; unchanged documents are not re-embedded.

    The new version is then scored on the frozen eval set (SUPPORTBOT_EVAL_DATASET); if a guarded
    metric fell beyond its tolerance the previous version stays in service (exit 3) unless --force.
    A source that could not be synced keeps its documents while the others commit (exit 4).
    """
    from bot.coordination import open_index
    from bot.engine.calibration import describe as describe_calibration
    from bot.sync import configured_sources
    from evals.gate import describe_gate, refresh_gated
    from knowledge.connectors.catalog import CatalogError
    from knowledge.index import IndexReadOnly, RefreshInProgress

    settings = load_settings(data_dir)
    try:
        specs = configured_sources(settings, sources)
    except CatalogError as exc:
        fail(str(exc))
    if not specs:
        fail("no sources: pass --source, write supportbot-sources.yml or set SUPPORTBOT_SOURCES")
    index = open_index(settings)
    try:
        gated = asyncio.run(refresh_gated(index, specs, settings, force=force, show_progress=progress))
    except (RefreshInProgress, IndexReadOnly) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the index in {settings.index_uri or settings.index_dir}: {exc.strerror or exc}")
    report, gate = gated.report, gated.gate
    if as_json:
        print_json(gated.to_dict())
    else:
        for warning in report.warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        for failure in report.failures:
            click.secho(f"failed: {failure}", fg="red", err=True)
        for counts in report.sources:
            click.echo(
                f"{counts.source}: added {counts.added}, updated {counts.updated}, unchanged {counts.unchanged}, "
                f"deleted {counts.deleted}, failed {counts.failed}"
            )
        click.echo(f"refresh done: {report.summary}")
        if report.calibration:
            click.echo(describe_calibration(report.calibration))
        click.echo(describe_gate(gate))
    if gate.status in ("blocked", "forced"):
        asyncio.run(notify_admins(settings, describe_gate(gate)))
    if gate.blocked:
        sys.exit(EXIT_GATE_BLOCKED)
    if report.failed_sources:  # scripts and cron must see it: the others committed, this one is stale
        fail(
            f"could not sync {', '.join(report.failed_sources)} (their documents are kept)",
            EXIT_SOURCE_FAILED,
        )


async def notify_admins(settings: Settings, text: str) -> None:
    """Tell the admins in Slack (alerts channel, else DMs) when a token is configured; else nothing."""
    from bot.slack.app import create_web_client, secret
    from bot.slack.refresh_gate import post_to_admins

    if not secret(settings.slack_bot_token):
        return
    client = create_web_client(settings)
    try:
        await post_to_admins(client, settings, text)
    finally:
        if client.session is not None:
            await client.session.close()


@main.command()
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="How many documents.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "fts"]), default="hybrid", show_default=True)
@click.option("--per-doc", default=1, show_default=True, help="Chunks shown per document.")
@data_dir_option
@json_option
def search(query: str, k: int, mode: str, per_doc: int, data_dir: Path | None, as_json: bool) -> None:
    """Ranked chunks for QUERY with document id, url and score."""
    from knowledge.index import IndexNotReady, KnowledgeIndex
    from knowledge.search import Searcher

    settings = load_settings(data_dir)
    index = KnowledgeIndex.from_settings(settings)
    try:
        result = Searcher.from_settings(settings, index).search(query, k, mode=mode, per_doc=per_doc)  # type: ignore[arg-type]  # click.Choice checked it
    except IndexNotReady as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_dict())
        return
    if not result.hits:
        click.echo("no results")
    for number, hit in enumerate(result.hits, start=1):
        where = f" > {hit.heading}" if hit.heading else ""
        click.secho(f"{number}. {hit.title}{where}  (score {hit.score:.3f})", bold=True)
        click.echo(f"   {hit.url}  [{hit.doc_id}]")
        snippet = " ".join(hit.text.split())
        click.echo(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


@main.command()
@data_dir_option
@json_option
def rollback(data_dir: Path | None, as_json: bool) -> None:
    """Return the index to the version of the previous refresh."""
    from bot.coordination import open_index
    from knowledge.index import IndexNotReady, IndexReadOnly, RefreshInProgress

    index = open_index(load_settings(data_dir))
    try:
        before, after = index.rollback()
    except (IndexNotReady, ValueError, RefreshInProgress, IndexReadOnly) as exc:
        fail(str(exc))
    if as_json:
        print_json({"from_version": before, "to_version": after})
    else:
        click.echo(f"rolled back: version {before} -> contents of version {after}")


@main.command()
@data_dir_option
@json_option
def status(data_dir: Path | None, as_json: bool) -> None:
    """Index size, version and last refresh."""
    from bot.engine import calibration
    from knowledge.index import KnowledgeIndex

    stats = calibration.index_status(KnowledgeIndex.from_settings(load_settings(data_dir)))
    if as_json:
        print_json(stats)
        return
    if not stats["exists"]:
        click.echo("no index yet: run `supportbot refresh`")
        return
    click.echo(f"{stats['documents']} documents, {stats['chunks']} chunks, version {stats['version']}")
    click.echo(f"indexes: {', '.join(stats['indexes']) or 'none'}")
    click.echo(calibration.describe(stats.get("calibration")))
    last = stats.get("last_refresh") or {}
    if last:
        totals = last.get("totals", {})
        click.echo(f"last refresh: {last.get('started_at')} ({', '.join(f'{k} {v}' for k, v in totals.items())})")


# --------------------------------------------------------------------------- answers


async def answer_questions(settings: Settings, questions, on_answer, *, log: bool = False) -> None:
    """One pipeline (and one event loop, which the Claude client needs) for a whole session:
    `questions` is an async iterator of Question, `on_answer(answer)` shows each Answer. With
    `log`, each answer goes to the interaction log (so `supportbot why ID` can explain it)."""
    from bot.engine.pipeline import Pipeline
    from bot.store import open_store

    pipeline = Pipeline.from_settings(settings)
    store = open_store(settings) if log else None
    try:
        try:
            await pipeline.warm_up()  # model load and index open are not the first answer's latency
        except Exception:  # no index yet: the answer itself says so
            pass
        async for question in questions:
            answer = await pipeline.answer(question)
            if store is not None:
                await store.log_answer(question, answer, slack={"surface": "cli"})
            on_answer(answer)
    finally:
        await pipeline.aclose()
        if store is not None:
            await store.aclose()


@main.command()
@data_dir_option
@json_option
def calibrate(data_dir: Path | None, as_json: bool) -> None:
    """Re-run the index's self-calibration for the version being served (refresh does this itself)."""
    from bot.coordination import open_index
    from bot.engine.calibration import IndexCalibrator, describe
    from knowledge.index import IndexReadOnly, RefreshInProgress

    settings = load_settings(data_dir)
    index = open_index(settings)
    if not index.exists():
        fail("no index yet: run `supportbot refresh` first")
    try:
        with index.write_lock():
            summary = asyncio.run(IndexCalibrator(settings)(index, index.serving_version()))
    except (RefreshInProgress, IndexReadOnly) as exc:
        fail(str(exc))
    if as_json:
        print_json({"calibration": summary})
    else:
        click.echo(describe(summary) if summary else "too few sections to calibrate: fixed thresholds stay in force")


@main.command()
@click.argument("question")
@data_dir_option
@json_option
def ask(question: str, data_dir: Path | None, as_json: bool) -> None:
    """Answer QUESTION from the knowledge: answer, numbered sources, confidence, decision and reasons.

    Offline (no ANTHROPIC_API_KEY) the extractive answerer quotes the sources; with a key, Claude answers.
    """
    from bot.engine.terminal import render_answer
    from bot.engine.types import Question

    async def one():
        yield Question(text=question, asker="cli")

    def show(answer) -> None:
        click.echo(answer.model_dump_json(indent=2) if as_json else render_answer(answer))

    asyncio.run(answer_questions(load_settings(data_dir), one(), show, log=True))


@main.command()
@click.argument("interaction_id")
@data_dir_option
@json_option
def why(interaction_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Explain one logged decision: query, retrieved chunks with scores, signals, calibration, threshold, cost."""
    from dataclasses import asdict

    from bot.engine.why import calibration_of, explain, render_terminal
    from bot.store import open_store
    from knowledge.index import KnowledgeIndex

    settings = load_settings(data_dir)

    async def lookup() -> dict | None:
        store = open_store(settings)
        try:
            return await store.get_interaction(interaction_id)
        finally:
            await store.aclose()

    row = asyncio.run(lookup())
    if row is None:
        fail(f"no interaction {interaction_id!r} in the interaction log")
        return
    explanation = explain(row, calibration_of(KnowledgeIndex.from_settings(settings).sidecar, row))
    click.echo(json.dumps(asdict(explanation), indent=2, default=str) if as_json else render_terminal(explanation))


@main.command()
@data_dir_option
def chat(data_dir: Path | None) -> None:
    """A conversation in the terminal; follow-up questions see the earlier turns. `exit` or Ctrl-D ends it."""
    from bot.engine.terminal import render_answer
    from bot.engine.types import Question, Turn

    history: list[Turn] = []

    async def turns():
        click.echo("Ask a question (exit or Ctrl-D to stop).")
        while True:
            try:
                text = await asyncio.to_thread(input, "\nyou> ")
            except EOFError:
                click.echo()
                return
            if text.strip().lower() in ("exit", "quit"):
                return
            if text.strip():
                question = Question(text=text, history=list(history), asker="cli")
                history.append(Turn(role="user", text=text))
                yield question

    def show(answer) -> None:
        history.append(Turn(role="assistant", text=answer.text))
        click.echo("\nbot> " + render_answer(answer))

    asyncio.run(answer_questions(load_settings(data_dir), turns(), show))


# --------------------------------------------------------------------------- slack


@main.command()
@click.option(
    "--socket-mode", is_flag=True, help="Connect out over Socket Mode (needs SLACK_APP_TOKEN) instead of HTTP."
)
@click.option("--host", default="0.0.0.0", show_default=True, help="HTTP mode: interface to listen on.")
@click.option("--port", default=3000, show_default=True, help="HTTP mode: port for /slack/events, /healthz, /metrics.")
@data_dir_option
def serve(socket_mode: bool, host: str, port: int, data_dir: Path | None) -> None:
    """Run the Slack bot (HTTP mode serves /slack/events, /healthz and /metrics)."""
    from bot.observability import configure_logging, secret_values
    from bot.slack.app import ConfigurationError, build_bot, check_settings, digest_poster
    from bot.slack.app import serve as run_bot
    from bot.sync import SourceSyncScheduler, catalog_of
    from evals.weekly import WeeklyScheduler
    from knowledge.connectors.catalog import CatalogError

    settings = load_settings(data_dir)
    configure_logging(json=not sys.stderr.isatty(), secrets=secret_values(settings))
    try:
        catalog = catalog_of(settings)
    except CatalogError as exc:
        fail(str(exc))

    async def run() -> None:
        bot = build_bot(settings, socket_mode=socket_mode)
        bot.refresher = gated_refresher  # /kb-refresh goes through the eval gate (bot/slack never imports evals/)
        # the weekly export + eval (on when SUPPORTBOT_WEEKLY_EVAL=true): built here, so the Slack
        # server never imports evals/; its digest goes to the report channel through the bot's client
        weekly = WeeklyScheduler(
            settings,
            post_digest=digest_poster(bot.client, settings.eval_report_channel),
            store=bot.store,
            pipeline=bot.pipeline,
            embedder=bot.index.embedder,
            claim_run=bot.coordination.claim_run,
        )
        # each source of supportbot-sources.yml with an `every:` interval syncs on its own schedule
        syncs = SourceSyncScheduler(
            bot.index,
            settings,
            list(catalog.sources.values()) if catalog else [],
            refresh=partial(gated_sync, admins=bot.client),  # scheduled syncs pass the eval gate too
            coordination=bot.coordination,  # with replicas: one of them syncs each interval
        )
        await run_bot(bot, host=host, port=port, background=[weekly, syncs])

    try:
        check_settings(settings, socket_mode=socket_mode)  # before anything heavy loads
        asyncio.run(run())
    except ConfigurationError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


async def gated_sync(index, specs, settings: Settings, *, admins):
    """A scheduled sync through the eval gate: a blocked version is rolled back, and the admins are
    told what fell, as after a blocked `/kb-refresh`."""
    from bot.slack.refresh_gate import post_to_admins
    from knowledge.connectors.registry import spec_uri

    outcome = await gated_refresher(index, specs, settings, False)
    if outcome.needs_admins and outcome.gate_text:
        names = ", ".join(spec_uri(spec) for spec in specs)
        await post_to_admins(admins, settings, f"Scheduled sync of {names}:\n{outcome.gate_text}")
    return outcome.report


async def gated_refresher(index, specs, settings: Settings, force: bool):
    """`/kb-refresh` through the eval gate, in the shape the Slack bot takes (`RefreshOutcome`)."""
    from bot.slack.refresh_gate import RefreshOutcome
    from evals.gate import describe_gate, refresh_gated

    gated = await refresh_gated(index, specs, settings, force=force)
    return RefreshOutcome(
        gated.report, describe_gate(gated.gate), needs_admins=gated.gate.status in ("blocked", "forced")
    )


@main.command()
@data_dir_option
@json_option
def doctor(data_dir: Path | None, as_json: bool) -> None:
    """Check the Slack setup: token and its scopes, manifest vs code, the bot's channel memberships."""
    from bot.slack.app import create_web_client, secret
    from bot.slack.doctor import as_dicts, run_checks, summary

    settings = load_settings(data_dir)
    if not secret(settings.slack_bot_token):
        fail("SLACK_BOT_TOKEN is not set")

    async def check():
        client = create_web_client(settings)
        try:
            return await run_checks(settings, client)
        finally:
            if client.session is not None:
                await client.session.close()

    checks = asyncio.run(check())
    report, ok = summary(checks)
    if as_json:
        print_json({"ok": ok, "checks": as_dicts(checks)})
    else:
        click.echo(report)
    if not ok:
        sys.exit(1)


# --------------------------------------------------------------------------- learned answers


@main.group("learned")
def learned_group() -> None:
    """Human answers approved as knowledge (drafted when an escalation is resolved, reviewed in Slack)."""


@learned_group.command("list")
@click.option("--status", type=click.Choice(["draft", "approved", "declined", "deleted"]), default=None)
@data_dir_option
@json_option
def learned_list(status: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Every learned entry (or those with one status), oldest first."""
    from dataclasses import asdict

    from knowledge.learned import LearnedStore

    entries = LearnedStore(load_settings(data_dir).data_dir).all(status)
    if as_json:
        print_json([asdict(entry) for entry in entries])
        return
    if not entries:
        click.echo("no learned answers")
    for entry in entries:
        click.echo(f"{entry.id}  {entry.status:<8}  {entry.citation}  {entry.title[:80]}")


@learned_group.command("delete")
@click.argument("entry_id")
@data_dir_option
def learned_delete(entry_id: str, data_dir: Path | None) -> None:
    """Take an approved entry out of the knowledge (its page goes, and the learned source is refreshed)."""
    from bot.coordination import open_index
    from bot.engine.calibration import refresh_calibrated
    from knowledge.index import IndexReadOnly, RefreshInProgress
    from knowledge.learned import EntryNotFound, LearnedStore

    settings = load_settings(data_dir)
    store = LearnedStore(settings.data_dir)
    try:
        entry = store.delete(entry_id)
    except EntryNotFound:
        fail(f"no learned entry {entry_id!r}")
        return
    index = open_index(settings)
    try:
        report = asyncio.run(refresh_calibrated(index, [store.source], settings))
    except (RefreshInProgress, IndexReadOnly) as exc:
        fail(f"deleted {entry.id}, but {exc}: the next refresh drops it")
        return
    click.echo(f"deleted {entry.id} ({entry.title[:80]}): {report.summary}")


# --------------------------------------------------------------------------- database


@main.group("db")
def db_group() -> None:
    """The shared PostgreSQL database of a replicated bot (SUPPORTBOT_DATABASE_URL)."""


@db_group.command("upgrade")
@data_dir_option
@json_option
def db_upgrade(data_dir: Path | None, as_json: bool) -> None:
    """Apply the pending schema migrations (safe to run from several replicas at once)."""
    settings = load_settings(data_dir)
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    if not url:
        fail("SUPPORTBOT_DATABASE_URL is not set: the embedded logs in the data dir need no migration", 2)
    import psycopg

    from bot.postgres.migrations import upgrade

    try:
        applied = upgrade(url)
    except psycopg.Error as exc:  # the URL's password never reaches the message: psycopg leaves it out
        fail(f"database upgrade failed: {type(exc).__name__}: {str(exc).strip()}")
    if as_json:
        print_json({"applied": applied})
    else:
        click.echo(f"applied {', '.join(applied)}" if applied else "database is up to date")


# --------------------------------------------------------------------------- evals


@main.group("evals")
def evals_group() -> None:
    """Turn feedback into eval cases, review them, and score the bot on an eval set."""


@evals_group.command("export")
@click.option(
    "--since", default="7d", show_default=True, help="Feedback newer than this: 7d, 12h, 2w or an ISO date ('' = all)."
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Candidates file (appended). Default: DATA_DIR/evals/candidates.jsonl.",
)
@click.option(
    "--review-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Thumbs-down answers needing a human (appended). Default: DATA_DIR/evals/review.jsonl.",
)
@click.option(
    "--frozen",
    "frozen",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Frozen set(s) whose cases are not offered again (default: SUPPORTBOT_EVAL_DATASET).",
)
@click.option("--threshold", default=0.9, show_default=True, help="Cosine similarity above which questions are merged.")
@data_dir_option
@json_option
def evals_export(
    since: str,
    out: Path | None,
    review_out: Path | None,
    frozen: tuple[Path, ...],
    threshold: float,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Feedback and human resolutions -> candidate eval cases (deduped, PII scrubbed, idempotent).

    Reads the configured logs: PostgreSQL when SUPPORTBOT_DATABASE_URL is set, else the data dir's."""
    from bot.store import open_store
    from evals.export import default_candidates_path, default_review_path, export_feedback, parse_since
    from knowledge.embeddings import Embedder

    settings = load_settings(data_dir)
    try:
        moment = parse_since(since)
    except ValueError:
        fail(f"--since: expected 7d, 12h, 2w or an ISO date, got {since!r}", 2)

    async def export() -> Any:
        store = open_store(settings)
        try:
            return await export_feedback(
                store,
                Embedder.from_settings(settings),
                since=moment,
                candidates_path=out or default_candidates_path(settings),
                review_path=review_out or default_review_path(settings),
                frozen_paths=list(frozen) or [settings.eval_dataset],
                threshold=threshold,
            )
        finally:
            await store.aclose()

    result = asyncio.run(export())
    if as_json:
        print_json(
            {
                "candidates_file": str(result.candidates_path),
                "review_file": str(result.review_path),
                "added": [case.id for case in result.added],
                "review": [case.id for case in result.review_added],
                "skipped": result.skipped,
                "merged": result.merged,
                "missing": result.missing,
            }
        )
    else:
        click.echo(result.summary())


@evals_group.command("review")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--into",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Frozen set to add accepted cases to (default: SUPPORTBOT_EVAL_DATASET).",
)
def evals_review(file: Path, into: Path | None) -> None:
    """Accept, edit or reject the candidate cases in FILE, one by one."""
    from evals.cases import InvalidCases
    from evals.review import review_file

    settings = load_settings(None)
    try:
        result = review_file(file, into or settings.eval_dataset)
    except InvalidCases as exc:
        fail(str(exc), 2)
    click.echo(result.summary())


@evals_group.command("run")
@click.option(
    "--dataset", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Eval cases (JSONL)."
)
@click.option(
    "--kb",
    default=None,
    metavar="SOURCE",
    help="Knowledge to evaluate against, indexed into a cached data dir (default: the configured index).",
)
@click.option("-k", default=5, show_default=True, help="Documents retrieved per question.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "fts"]), default="hybrid", show_default=True)
@click.option(
    "--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the report JSON here."
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Earlier report JSON; exit 1 when a metric fell beyond the tolerance.",
)
@click.option(
    "--tolerance", type=float, default=None, help="Allowed drop of a quality metric [default: each metric's own]."
)
@click.option(
    "--latency-tolerance", type=float, default=None, help="Allowed relative latency growth [default: the metric's own]."
)
@click.option(
    "--latency-floor-ms", type=float, default=None, help="Latency noise floor added [default: the metric's own]."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write report.md / report.html (and keep a history for trends) in this folder.",
)
@click.option("--offline", is_flag=True, help="Use the offline answerer even when ANTHROPIC_API_KEY is set.")
@click.option("--judge/--no-judge", default=None, help="LLM judge of correctness (default: on when a key is set).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@data_dir_option
@json_option
def evals_run(
    dataset: Path,
    kb: str | None,
    k: int,
    mode: str,
    json_out: Path | None,
    baseline: Path | None,
    tolerance: float | None,
    latency_tolerance: float | None,
    latency_floor_ms: float | None,
    report_dir: Path | None,
    offline: bool,
    judge: bool | None,
    progress: bool | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Answer every case with the real pipeline; print retrieval, answer, escalation and latency metrics."""
    from evals.cases import InvalidCases, load_cases
    from evals.compare import comparability_warnings, compare_reports
    from evals.report import history_entry, write_report
    from evals.runner import run_eval
    from evals.schema import EvalReport
    from knowledge.index import IndexNotReady

    settings = load_settings(data_dir)
    if offline:
        settings = settings.model_copy(update={"anthropic_api_key": None})
    try:
        cases = load_cases(dataset)
    except InvalidCases as exc:
        fail(str(exc), 2)
    previous = EvalReport.load(baseline) if baseline else None
    use_judge = settings.has_anthropic_key if judge is None else judge
    if use_judge and not settings.has_anthropic_key:
        fail("--judge needs ANTHROPIC_API_KEY", 2)
    judge_fn = None
    if use_judge:
        from evals.judge import make_claude_judge

        judge_fn = make_claude_judge(settings)
    try:
        report = EvalReport.of(
            asyncio.run(
                run_eval(
                    settings,
                    cases,
                    k=k,
                    mode=mode,
                    kb=kb,
                    judge=judge_fn,
                    dataset=dataset,
                    progress=sys.stderr.isatty() if progress is None else progress,
                )
            )
        )
    except IndexNotReady as exc:
        fail(f"{exc} (or pass --kb SOURCE)", 2)  # exit 1 means "regression"
    changes = (
        compare_reports(
            report,
            previous,
            tolerance=tolerance,
            latency_tolerance=latency_tolerance,
            latency_floor_ms=latency_floor_ms,
        )
        if previous
        else []
    )
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(report.to_dict(), indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
    if report_dir:
        paths = write_report(report, report_dir, changes)
        click.echo(f"report: {paths['html']}", err=True)
    if as_json:
        print_json(history_entry(report))
    else:
        print_eval_summary(report)
    if previous:
        for warning in comparability_warnings(report, previous):
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        regressions = [change for change in changes if change.regressed]
        for change in changes:
            click.echo(f"  {change}", err=True)
        if regressions:
            click.secho(
                f"regression against {baseline}: " + ", ".join(change.metric for change in regressions),
                fg="red",
                err=True,
            )
            sys.exit(1)
        allowance = "each metric's own tolerance" if tolerance is None else f"tolerance {tolerance}"
        click.secho(f"no regression against {baseline} ({allowance})", fg="green", err=True)


def eval_summary_lines(report: EvalReport) -> list[str]:
    """The terminal summary of a run: one line per report section, metrics from the registry."""
    from evals.report import threshold_summary
    from evals.schema import metrics_in

    def line(section: str) -> str:
        parts = [
            f"{metric.short_title(report.k)} {metric.format(report.value(metric))}"
            for metric in metrics_in(section)
            if section != "answer" or metric.name != "correctness_judge" or report.answer.correctness_judge is not None
        ]
        return f"{section:<11} " + "  ".join(parts)

    usage, latency = report.usage, report.latency_ms
    lines = [
        f"{report.cases} cases, k={report.k}, mode {report.config.mode}, generator {report.config.generator}",
        line("retrieval"),
        line("answer"),
        line("escalation"),
        f"latency     p50 {latency.p50 or 0:.0f} ms  p95 {latency.p95 or 0:.0f} ms   tokens {usage.input_tokens} in / "
        f"{usage.output_tokens} out  cost ${usage.cost_usd:.4f}",
    ]
    judge = usage.judge
    if judge.calls:
        lines.append(
            f"judge       {judge.calls} calls, {judge.failed} failed, "
            f"{judge.input_tokens} in / {judge.output_tokens} out  cost ${judge.cost_usd:.4f}"
        )
    advice = threshold_summary(report.threshold_advice)
    if advice:
        lines.append(f"threshold   {advice}")
    from bot.engine.calibration import describe

    lines.append(f"calibration {describe(report.self_calibration)}")
    return lines


def print_eval_summary(report: EvalReport) -> None:
    for line in eval_summary_lines(report):
        click.echo(line)


@evals_group.command("weekly")
@click.option("--since", default="7d", show_default=True)
@data_dir_option
def evals_weekly(since: str, data_dir: Path | None) -> None:
    """Once, now: export feedback, run SUPPORTBOT_EVAL_DATASET, write the report, print the digest."""
    from evals.weekly import run_weekly

    result = asyncio.run(run_weekly(load_settings(data_dir), since=since, progress=sys.stderr.isatty()))
    click.echo(result.digest)


@main.command()
@click.option(
    "--port",
    default=3000,
    show_default=True,
    envvar="SUPPORTBOT_PORT",
    help="Port `supportbot serve` listens on (env SUPPORTBOT_PORT).",
)
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for an answer.")
def healthcheck(port: int, timeout: float) -> None:
    """Exit 0 if the local server's /healthz answers; the Docker HEALTHCHECK (the image has no curl)."""
    import urllib.request

    url = f"http://127.0.0.1:{port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP(S)_PROXY
    try:
        with opener.open(url, timeout=timeout):
            pass  # urllib raises on any non-2xx status
    except OSError as exc:  # URLError, HTTPError, refused, timed out
        fail(f"{url}: {exc}")
    click.echo(f"{url}: ok")


if __name__ == "__main__":
    main()
