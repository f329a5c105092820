"""Around the connectors: failures that must keep documents, publishing states, the sources file,
scheduled sync, and the converters from API formats to Markdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time

import pytest

from bot.settings import Settings
from bot.sync import SourceSyncScheduler, configured_sources
from knowledge.connectors.catalog import CatalogError, load_catalog
from knowledge.connectors.markup import (
    confluence_storage_to_markdown,
    mdx_to_markdown,
    notion_blocks_to_markdown,
    rst_to_markdown,
)
from knowledge.connectors.registry import SourceSpec
from knowledge.index import KnowledgeIndex
from tests.emulators.github_api import GitHubEmulator
from tests.emulators.notion_api import text_block
from tests.emulators.zendesk_api import ZendeskEmulator

ZENDESK = "zendesk+https://acme.zendesk.com/hc/en-us"
GITHUB = "github://acme/kb/docs@main"


def doc_ids(index: KnowledgeIndex, source: str) -> set[str]:
    return {doc_id for (_, doc_id) in index.doc_hashes(source)}


@pytest.fixture
async def zendesk(monkeypatch):
    async with ZendeskEmulator() as api:
        api.add_user("bot@acme.test", "zd-token", "agent")
        api.add_user("reader@acme.test", "zd-reader", "end-user")
        monkeypatch.setenv("ZENDESK_API_BASE", api.base_url)
        monkeypatch.setenv("ZENDESK_EMAIL", "bot@acme.test")
        monkeypatch.setenv("ZENDESK_API_TOKEN", "zd-token")
        yield api


@pytest.fixture
async def github(monkeypatch):
    """acme/kb with docs/a.md on main, the token and the emulator's base in the environment."""
    async with GitHubEmulator() as api:
        api.tokens.add("ghp_ok")
        api.add_repo("acme", "kb")
        api.put_file("acme", "kb", "docs/a.md", "# Export\n\nUse Settings, Data, Export.")
        monkeypatch.setenv("GITHUB_API_URL", api.base_url)
        monkeypatch.setenv("GITHUB_TOKEN", "ghp_ok")
        yield api


async def test_unpublished_and_restricted_articles_leave_the_index(zendesk, tmp_path, embedder):
    public = zendesk.add_article("Reset a password", "<p>Open Settings, Security, Reset password.</p>")
    internal = zendesk.add_article("Refund override", "<p>Agents may override refunds.</p>", user_segment_id=77)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    await index.refresh([ZENDESK])
    assert doc_ids(index, ZENDESK) == {str(public)}
    allowed = SourceSpec(ZENDESK, {"allowed_user_segments": [77]})
    await index.refresh([allowed])
    assert doc_ids(index, ZENDESK) == {str(public), str(internal)}
    zendesk.edit_article(public, draft=True)  # unpublished: the translation is a draft again
    report = await index.refresh([allowed])
    assert doc_ids(index, ZENDESK) == {str(internal)} and report.total("deleted") == 1


async def test_forbidden_role_names_the_env_vars_and_deletes_nothing(zendesk, tmp_path, embedder, monkeypatch):
    zendesk.add_article("Reset a password", "<p>Open Settings, Security, Reset password.</p>")
    index = KnowledgeIndex(tmp_path / "index", embedder)
    await index.refresh([ZENDESK])
    monkeypatch.setenv("ZENDESK_EMAIL", "reader@acme.test")  # an end user: the export needs an agent
    monkeypatch.setenv("ZENDESK_API_TOKEN", "zd-reader")
    report = await index.refresh([ZENDESK])
    assert report.failed_sources == [ZENDESK]
    assert "HTTP 403" in report.failures[0] and "ZENDESK_EMAIL and ZENDESK_API_TOKEN" in report.failures[0]
    assert len(doc_ids(index, ZENDESK)) == 1


async def test_missing_credentials_are_named(tmp_path, embedder, monkeypatch):
    monkeypatch.delenv("NOTION_TOKEN", raising=False)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    report = await index.refresh(["notion://0123456789abcdef0123456789abcdef"])
    assert report.failed_sources and "NOTION_TOKEN is not set" in report.failures[0]


async def test_server_errors_are_retried_then_the_source_fails_without_deleting(
    tmp_path, embedder, monkeypatch, github
):
    github.put_file("acme", "kb", "docs/b.md", "# Import\n\nUse Settings, Data, Import.")
    spec = SourceSpec(GITHUB)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    github.fail(502, retry_after=None)  # one transient error: retried
    first = await index.refresh([spec])
    assert first.failed_sources == [] and doc_ids(index, GITHUB) == {"docs/a.md", "docs/b.md"}
    assert github.statuses[502] == 1

    github.delete_file("acme", "kb", "docs/b.md")
    for _ in range(4):  # more than every attempt: the source fails this time
        github.fail(503, retry_after=None)
    failed = await index.refresh([spec])
    assert failed.failed_sources == [GITHUB] and "gave up after 4 attempts (HTTP 503)" in failed.failures[0]
    assert doc_ids(index, GITHUB) == {"docs/a.md", "docs/b.md"}  # nothing deleted on error
    recovered = await index.refresh([spec])
    assert recovered.total("deleted") == 1 and doc_ids(index, GITHUB) == {"docs/a.md"}


async def test_rate_limit_quota_headers_are_sent_and_a_spent_quota_waits_for_reset(
    tmp_path, embedder, monkeypatch, github
):
    github.limits["token"] = 3  # tree, blob, commits
    index = KnowledgeIndex(tmp_path / "index", embedder)
    await index.refresh([GITHUB])  # tree, blob, commits: the quota of 3 is spent ...
    assert github.used["token"] == 3 and github.statuses[403] == 0
    github.put_file("acme", "kb", "docs/b.md", "# Import\n\nUse Settings, Data, Import.")
    github.reset_at = int(time.time()) + 2  # ... until this window ends; the client waits for it
    started = time.monotonic()
    report = await index.refresh([GITHUB])
    assert github.statuses[403] == 1 and report.failed_sources == []
    assert doc_ids(index, GITHUB) == {"docs/a.md", "docs/b.md"}
    assert time.monotonic() - started >= 1.0  # it waited for x-ratelimit-reset instead of hammering


def test_sources_file(tmp_path):
    path = tmp_path / "supportbot-sources.yml"
    path.write_text(
        "sources:\n"
        "  - name: help-center\n    uri: zendesk+https://acme.zendesk.com/hc/en-us\n    every: 15m\n"
        "    allowed_user_segments: [7]\n"
        "  - uri: github://acme/kb/docs@main\n    every: 2h\n"
        "  - uri: examples/knowledge\n"
    )
    catalog = load_catalog(path)
    assert list(catalog.sources) == ["help-center", "github://acme/kb/docs@main", "examples/knowledge"]
    assert catalog.sources["help-center"].every_seconds == 900
    assert catalog.sources["help-center"].options == {"allowed_user_segments": [7]}
    assert catalog.sources["examples/knowledge"].every_seconds is None
    settings = Settings(data_dir=tmp_path / "data", sources_file=path, _env_file=None)
    assert configured_sources(settings) == list(catalog.sources.values())
    assert configured_sources(settings, ["help-center", "other/folder"]) == [
        catalog.sources["help-center"],
        "other/folder",
    ]

    for text, message in [
        ("sources:\n  - every: 1h\n", "sources[1]: each source needs a 'uri'"),
        ("sources:\n  - uri: a\n    every: soon\n", "'every' must look like"),
        ("sources:\n  - uri: a\n    every: 5s\n", "the minimum is 60 s"),
        ("sources:\n  - uri: a\n  - uri: a\n", "used twice"),
        ("- a\n", "expected a mapping with a 'sources:' list"),
    ]:
        path.write_text(text)
        with pytest.raises(CatalogError, match=re.escape(message)):
            load_catalog(path)


async def test_scheduled_sync_runs_each_source_on_its_interval(tmp_path, embedder, monkeypatch, github):
    settings = Settings(data_dir=tmp_path / "data", self_calibration=False, _env_file=None)
    index = KnowledgeIndex.from_settings(settings, embedder)
    scheduler = SourceSyncScheduler(index, settings, [SourceSpec(GITHUB, every_seconds=0.2), SourceSpec("x")])
    assert [spec.uri for spec in scheduler.specs] == [GITHUB]  # no interval: only on refresh
    scheduler.start()
    deadline = time.monotonic() + 120
    pushed_after: int | None = None  # how many rounds had reported when the push landed
    try:
        while time.monotonic() < deadline:
            if scheduler.reports and pushed_after is None:  # after the first round, a push a later round picks up
                pushed_after = len(scheduler.reports)
                github.put_file("acme", "kb", "docs/b.md", "# Import\n\nUse Settings, Data, Import.")
            if pushed_after is not None and any(r.total("added") for r in scheduler.reports[pushed_after:]):
                break
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    assert pushed_after is not None, "no scheduled round ran"
    # a round already listing when the push landed may see nothing new; the next one on the schedule must
    first, later = scheduler.reports[0], [r for r in scheduler.reports[pushed_after:] if r.total("added")]
    assert first.total("added") == 1 and later, [r.summary for r in scheduler.reports]
    assert later[0].total("added") == 1 and later[0].total("unchanged") == 1
    assert doc_ids(index, GITHUB) == {"docs/a.md", "docs/b.md"}


def test_markup_converters():
    rst = "=====\nGuide\n=====\n\nIntro.\n\nInstall\n-------\n\n.. note::\n\n   Needs admin.\n\nSteps\n~~~~~\n\nRun it."
    assert rst_to_markdown(rst).splitlines()[0] == "# Guide"
    assert "## Install" in rst_to_markdown(rst) and "### Steps" in rst_to_markdown(rst)
    assert ".. note::" not in rst_to_markdown(rst) and "Needs admin." in rst_to_markdown(rst)
    mdx = "import Tabs from '@theme/Tabs'\n\n# Setup\n\n<Tabs>\nRun the installer.\n</Tabs>\n"
    assert mdx_to_markdown(mdx) == "# Setup\n\nRun the installer."
    storage = (
        '<h2>Reset</h2><p>Run this:</p><ac:structured-macro ac:name="code"><ac:plain-text-body>'
        "<![CDATA[reset --all <now>]]></ac:plain-text-body></ac:structured-macro>"
    )
    text, _ = confluence_storage_to_markdown(storage)
    assert "## Reset" in text and "reset --all <now>" in text
    blocks = [
        text_block("heading_2", "Steps"),
        {**text_block("toggle", "More"), "children": [text_block("bulleted_list_item", "nested")]},
        text_block("to_do", "check", checked=True),
        text_block("code", "ls -la", language="bash"),
    ]
    assert notion_blocks_to_markdown(blocks) == "## Steps\n\nMore\n\n  - nested\n\n- [x] check\n\n```bash\nls -la\n```"


def test_the_example_sources_file_is_valid():
    from bot.engine.channels import policies_from_file
    from tests.conftest import ROOT

    example = ROOT / "examples" / "supportbot-sources.yml"
    catalog = load_catalog(example)
    assert {"help-center", "wiki", "runbooks", "billing-docs", "local"} <= set(catalog.sources)
    policy = policies_from_file(example).for_channel("C0BILLING")
    assert policy.sources == {"github://acme/handbook/docs/billing@main"} and policy.answer_threshold == 0.7


async def test_rollback_forgets_cursors_so_the_next_sync_restores_what_changed(tmp_path, embedder, monkeypatch, github):
    github.put_file("acme", "kb", "docs/b.md", "# Import\n\nUse Settings, Data, Import.")
    index = KnowledgeIndex(tmp_path / "index", embedder)
    await index.refresh([GITHUB])
    github.put_file("acme", "kb", "docs/a.md", "# Export\n\nUse Settings, Data, Export as ZIP.")
    await index.refresh([GITHUB])
    index.rollback()  # the index holds the old docs/a.md again; the repository does not
    report = await index.refresh([GITHUB])
    assert report.total("updated") == 1 and report.chunks_embedded == 1  # only a.md, b.md unchanged
    texts = index.table.to_lance().to_table(columns=["text"], filter="doc_id = 'docs/a.md'").column("text")
    assert any("ZIP" in text for text in texts.to_pylist())


async def test_a_cited_github_source_shows_its_last_commit_date(tmp_path, embedder, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from bot.engine.pipeline import Pipeline
    from bot.engine.types import Question
    from bot.slack.blocks import sources_block
    from knowledge.search import Searcher

    now = datetime.now(timezone.utc).replace(microsecond=0)
    first, last, edited = now - timedelta(days=40), now - timedelta(days=12), now - timedelta(days=1)
    async with GitHubEmulator() as api:
        api.tokens.add("ghp_ok")
        api.add_repo("acme", "kb")
        export = "# Export your data\n\nTo export your data open Settings, Data, Export and pick CSV."
        api.put_file("acme", "kb", "docs/export.md", export, at=first)
        api.put_file("acme", "kb", "docs/export.md", export + " Exports are emailed.", at=last)  # the last commit
        api.put_file("acme", "kb", "docs/other.md", "# Invite a teammate\n\nOpen Team and click Invite.", at=first)
        dated = "---\nupdated_at: 2023-02-01\n---\n# Import data\n\nOpen Settings, Data, Import and upload a CSV."
        api.put_file("acme", "kb", "docs/import.md", dated, at=last)  # the front matter's date wins
        monkeypatch.setenv("GITHUB_API_URL", api.base_url)
        monkeypatch.setenv("GITHUB_TOKEN", "ghp_ok")
        settings = Settings(data_dir=tmp_path / "data", self_calibration=False, _env_file=None)
        index = KnowledgeIndex.from_settings(settings, embedder)

        def commit_calls() -> list[str]:
            return [path for _, path in api.requests if path.startswith("/repos/acme/kb/commits")]

        await index.refresh([GITHUB])
        assert sorted(commit_calls()) == [
            "/repos/acme/kb/commits?path=docs/export.md&sha=main&per_page=1",
            "/repos/acme/kb/commits?path=docs/other.md&sha=main&per_page=1",
        ]  # one per new file, none for the file whose front matter dates it
        pipeline = Pipeline.from_settings(settings, index=index, searcher=Searcher.from_settings(settings, index))
        answer = await pipeline.answer(Question(text="How do I export my data?", channel="C1"))
        cited = {c.doc_id: c for c in answer.citations}
        assert cited["docs/export.md"].updated_at == last.strftime("%Y-%m-%dT%H:%M:%SZ")
        block = sources_block(answer.citations)
        assert block is not None and f"updated {last.day} {last:%b %Y}" in str(block)
        imported = await pipeline.answer(Question(text="How do I import a CSV of data?", channel="C1"))
        dated_citation = next(c for c in imported.citations if c.doc_id == "docs/import.md")
        assert dated_citation.updated_at == "2023-02-01" and dated_citation.stale  # "may be out of date"

        api.reset_counts()
        unchanged = await index.refresh([GITHUB])
        assert unchanged.chunks_embedded == 0 and commit_calls() == [] and len(api.requests) == 1

        api.put_file(
            "acme", "kb", "docs/other.md", "# Invite a teammate\n\nOpen Team, click Invite, enter the email.", at=edited
        )
        api.reset_counts()
        await index.refresh([GITHUB])
        assert commit_calls() == ["/repos/acme/kb/commits?path=docs/other.md&sha=main&per_page=1"]
        hits = index.table.to_lance().to_table(columns=["metadata"], filter="doc_id = 'docs/other.md'")
        assert edited.strftime("%Y-%m-%dT%H:%M:%SZ") in hits.column("metadata").to_pylist()[0]


@contextlib.contextmanager
def serving_in_a_thread(emulator):
    """The emulator on its own event loop, so a synchronous caller (the CLI's asyncio.run) can use it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(emulator.start(), loop).result(30)
    try:
        yield emulator
    finally:
        asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def test_cli_refresh_exits_4_naming_a_failed_source_while_the_others_commit(tmp_path, monkeypatch, embedder):
    from click.testing import CliRunner

    from bot.cli import EXIT_SOURCE_FAILED, main

    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "vat.md").write_text("# VAT\n\nReverse charge applies to EU B2B invoices.", encoding="utf-8")
    with serving_in_a_thread(GitHubEmulator()) as api:
        api.tokens.add("ghp_ok")
        api.add_repo("acme", "kb")
        api.put_file("acme", "kb", "docs/a.md", "# Export\n\nUse Settings, Data, Export.")
        api.put_file("acme", "kb", "docs/b.md", "# Import\n\nUse Settings, Data, Import.")
        for name, value in {
            "GITHUB_API_URL": api.base_url,
            "GITHUB_TOKEN": "ghp_ok",
            "SUPPORTBOT_DATA_DIR": str(tmp_path / "data"),
            "SUPPORTBOT_SOURCES_FILE": str(tmp_path / "none.yml"),
            "SUPPORTBOT_SELF_CALIBRATION": "false",
        }.items():
            monkeypatch.setenv(name, value)
        args = ["refresh", "--source", str(folder), "--source", GITHUB, "--no-progress"]
        ok = CliRunner().invoke(main, args)
        assert ok.exit_code == 0, ok.output

        monkeypatch.setenv("GITHUB_TOKEN", "ghp_revoked")  # the API answers 401 from now on
        api.delete_file("acme", "kb", "docs/b.md")  # an upstream deletion the failed sync must not apply
        (folder / "gst.md").write_text("# GST\n\nGST is charged on Australian sales.", encoding="utf-8")
        failed = CliRunner().invoke(main, [*args, "--json"])
        assert failed.exit_code == EXIT_SOURCE_FAILED == 4, failed.output
        assert f"could not sync {GITHUB} (their documents are kept)" in failed.stderr
        report = json.loads(failed.stdout)
        assert report["failed_sources"] == [GITHUB] and "401" in " ".join(report["failures"])
        assert "GITHUB_TOKEN" in " ".join(report["failures"])
        assert api.statuses[401] == 1

    settings = Settings(data_dir=tmp_path / "data", _env_file=None)
    index = KnowledgeIndex.from_settings(settings, embedder)
    assert doc_ids(index, GITHUB) == {"docs/a.md", "docs/b.md"}  # nothing of the failed source deleted
    assert {doc_id for (_, doc_id) in index.doc_hashes(str(folder.resolve()))} == {"vat.md", "gst.md"}


async def test_with_replicas_one_syncs_each_interval_and_a_survivor_takes_over(
    tmp_path, embedder, monkeypatch, postgres_url, github
):
    """Two `serve` schedulers sharing one PostgreSQL and one index volume, one source, one interval,
    on one clock the test moves (replicas agree on wall time)."""
    from bot.postgres.coordination import PostgresCoordination
    from bot.postgres.store import PostgresStore

    every, now = 60.0, [1_800_000_000.0]
    settings = Settings(data_dir=tmp_path / "data", self_calibration=False, _env_file=None)
    spec = SourceSpec(GITHUB, every_seconds=every)
    stores = [PostgresStore(postgres_url, replica_timeout_seconds=1.0, replica_id=f"r{n}") for n in range(2)]
    stuck = asyncio.Event()  # the holder's sync is under way (and never finishes: it dies in it)

    async def dies_mid_sync(index, specs, settings):
        stuck.set()
        await asyncio.Event().wait()

    def replica(store, refresh=None) -> SourceSyncScheduler:
        index = KnowledgeIndex.from_settings(settings, embedder)
        coordination = PostgresCoordination(store)
        return SourceSyncScheduler(index, settings, [spec], coordination=coordination, clock=lambda: now[0])

    first, second = replica(stores[0]), replica(stores[1])
    try:
        # One interval, both replicas due: exactly one syncs, whichever asks first or later in it.
        assert await first.sync_once(spec) is not None
        now[0] += every / 2
        assert await second.sync_once(spec) is None and await first.sync_once(spec) is None
        now[0] += every / 2  # the next interval: the other replica may win it, and then only it
        assert await second.sync_once(spec) is not None and await first.sync_once(spec) is None
        listings = [path for _, path in github.requests if "/git/trees/" in path]
        assert len(listings) == 2 and first.synced[0][1] + 1 == second.synced[0][1]

        # The next interval's holder dies mid-sync: meanwhile the other is refused, then takes over.
        now[0] += every
        first.refresh = dies_mid_sync
        holder = asyncio.create_task(first.sync_once(spec))
        await asyncio.wait_for(stuck.wait(), 30)
        assert await second.sync_once(spec) is None  # the lease is held
        holder.cancel()  # the replica dies: its database session ends, and its lease with it
        await asyncio.gather(holder, return_exceptions=True)
        await stores[0].aclose()
        now[0] += every
        github.put_file("acme", "kb", "docs/b.md", "# Import\n\nUse Settings, Data, Import.")
        report = await second.sync_once(spec)
        assert report is not None and report.total("added") == 1
        assert doc_ids(second.index, GITHUB) == {"docs/a.md", "docs/b.md"}
    finally:
        for store in stores:
            await store.aclose()


async def test_one_replica_syncs_an_interval_once_even_when_it_wakes_early(tmp_path, embedder, github):
    """Without PostgreSQL every claim succeeds: a round that wakes before the boundary by wall
    time (NTP slews the wall clock, the sleep runs on the monotonic one) must not sync again."""
    every, now = 60.0, [1_800_000_000.0]
    settings = Settings(data_dir=tmp_path / "data", self_calibration=False, _env_file=None)
    index = KnowledgeIndex.from_settings(settings, embedder)
    spec = SourceSpec(GITHUB, every_seconds=every)
    scheduler = SourceSyncScheduler(index, settings, [spec], clock=lambda: now[0])
    assert await scheduler.sync_once(spec) is not None
    now[0] += every - 0.5  # the next boundary is 0.5 s away by wall time
    assert await scheduler.sync_once(spec) is None
    now[0] += 0.5
    assert await scheduler.sync_once(spec) is not None
    listings = [path for _, path in github.requests if "/git/trees/" in path]
    assert len(listings) == 2 and [n for _, n in scheduler.synced] == [30_000_000, 30_000_001]
