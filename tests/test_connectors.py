"""Every connector against its API emulator, over real HTTP, into a real index: the issue's must-shows.

First sync of 260 documents over several pages with a 429 along the way; a second sync with 0
embeddings and few calls; an edit re-embeds only that document's chunks; a deletion (or archive,
or unpublish) removes it; bad credentials give a clear error naming the env var and delete nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from knowledge.index import KnowledgeIndex
from tests.emulators.confluence_api import ConfluenceEmulator
from tests.emulators.github_api import GitHubEmulator
from tests.emulators.notion_api import NotionEmulator, text_block
from tests.emulators.rest_base import RestEmulator
from tests.emulators.zendesk_api import ZendeskEmulator

COUNT = 260  # over several pages of every API's page size


def body(number: int, extra: str = "") -> str:
    return (
        f"Widget {number} setup. Open Settings, then Widgets, then pick widget {number} and press Save. {extra}".strip()
    )


@dataclass
class Scenario:
    """How one emulator is filled and changed; the test body is the same for every connector."""

    emulator: RestEmulator
    uri: str
    env: dict[str, str]
    bad_env: dict[str, str]
    env_var_named: str
    later_page: Callable[[Any], bool]  # a request after the first page: gets the 429
    edit: Callable[[], str] = lambda: ""  # changes one document, returns its id
    delete: Callable[[], str] = lambda: ""  # removes one document, returns its id
    ids: list[str] = field(default_factory=list)


def zendesk_scenario() -> Scenario:
    api = ZendeskEmulator()
    api.add_user("bot@acme.test", "zd-token", "agent")
    ids = [str(api.add_article(f"Widget {n}", f"<h2>Steps</h2><p>{body(n)}</p>")) for n in range(COUNT)]
    api.add_article("Internal notes", "<p>Agents only.</p>", user_segment_id=7)  # restricted: skipped
    api.add_article("Half written", "<p>Not yet.</p>", draft=True)  # draft: skipped
    api.add_article("Widget en français", "<p>Réglages.</p>", locale="fr")  # other locale: skipped
    scenario = Scenario(
        api,
        "zendesk+https://acme.zendesk.com/hc/en-us",
        {"ZENDESK_EMAIL": "bot@acme.test", "ZENDESK_API_TOKEN": "zd-token"},
        {"ZENDESK_EMAIL": "bot@acme.test", "ZENDESK_API_TOKEN": "expired"},
        "ZENDESK_API_TOKEN",
        lambda request: "page%5Bafter%5D" in request.path_qs or "page[after]" in request.path_qs,
        ids=ids,
    )
    scenario.edit = lambda: (api.edit_article(int(ids[5]), body=f"<p>{body(5, 'Now also press Apply.')}</p>"), ids[5])[
        1
    ]
    victims = [ids[9], ids[10]]
    scenario.delete = lambda: (api.archive_article(int(victims[0])), victims.pop(0))[1]
    return scenario


def github_scenario() -> Scenario:
    api = GitHubEmulator()
    api.tokens.add("ghp_valid")
    api.add_repo("acme", "handbook")
    ids = []
    for n in range(COUNT):
        path = f"docs/widgets/w{n:03d}.md" if n % 3 else f"docs/widgets/w{n:03d}.rst"
        text = f"# Widget {n}\n\n{body(n)}" if n % 3 else f"Widget {n}\n=========\n\n{body(n)}"
        api.put_file("acme", "handbook", path, text)
        ids.append(path)
    api.put_file("acme", "handbook", "src/app.py", "print('not docs')")  # outside docs/, not a doc
    api.put_file("acme", "handbook", "docs/logo.png", "PNG")  # not a doc type
    scenario = Scenario(
        api,
        "github://acme/handbook/docs@main",
        {"GITHUB_TOKEN": "ghp_valid"},
        {"GITHUB_TOKEN": "ghp_revoked"},
        "GITHUB_TOKEN",
        lambda request: "/git/blobs/" in request.path,
        ids=ids,
    )
    scenario.edit = lambda: (
        api.put_file("acme", "handbook", ids[4], f"# Widget 4\n\n{body(4, 'Now also press Apply.')}"),
        ids[4],
    )[1]
    victims = [ids[7], ids[8]]
    scenario.delete = lambda: (api.delete_file("acme", "handbook", victims[0]), victims.pop(0))[1]
    return scenario


def confluence_scenario() -> Scenario:
    api = ConfluenceEmulator()
    api.accounts["bot@acme.test"] = "cf-token"
    api.add_space("KB")
    api.add_space("HR")
    ids = [
        api.add_page("KB", f"Widget {n}", f"<h2>Steps</h2><p>{body(n)}</p>", labels=["widgets"]) for n in range(COUNT)
    ]
    api.add_page("HR", "Payroll", "<p>Another space: not synced.</p>")
    scenario = Scenario(
        api,
        "confluence+https://acme.atlassian.net/wiki/spaces/KB",
        {"CONFLUENCE_EMAIL": "bot@acme.test", "CONFLUENCE_API_TOKEN": "cf-token"},
        {"CONFLUENCE_EMAIL": "bot@acme.test", "CONFLUENCE_API_TOKEN": "revoked"},
        "CONFLUENCE_API_TOKEN",
        lambda request: "cursor=" in request.query_string and "/pages" in request.path,
        ids=ids,
    )
    scenario.edit = lambda: (api.edit_page(ids[3], f"<p>{body(3, 'Now also press Apply.')}</p>"), ids[3])[1]
    victims = [ids[11], ids[12]]
    scenario.delete = lambda: (api.archive_page(victims[0]), victims.pop(0))[1]
    return scenario


def notion_scenario() -> Scenario:
    api = NotionEmulator()
    api.secrets.add("secret_valid")
    long_page = [text_block("heading_2", "Overview")] + [
        text_block("paragraph", f"Fact {n} about widgets.") for n in range(120)
    ]
    root = api.add_page("Support KB", long_page)  # over one page of blocks
    children = [
        api.add_page(
            f"Widget {n}",
            [
                text_block("heading_2", "Steps"),
                text_block("toggle", "Details", children=[text_block("paragraph", body(n))]),
            ],
            parent=root,
        )
        for n in range(COUNT - 1)
    ]
    api.add_page("Elsewhere", [text_block("paragraph", "Shared but outside the root.")])
    ids = [page_id.replace("-", "") for page_id in [root, *children]]
    scenario = Scenario(
        api,
        f"notion://{root}",
        {"NOTION_TOKEN": "secret_valid"},
        {"NOTION_TOKEN": "secret_revoked"},
        "NOTION_TOKEN",
        lambda request: "start_cursor=" in request.query_string,  # the second page of the long page's blocks
        ids=ids,
    )
    scenario.edit = lambda: (
        api.edit_page(children[2], [text_block("paragraph", body(2, "Now also press Apply."))]),
        ids[3],
    )[1]
    victims = [children[5], children[6]]
    scenario.delete = lambda: (api.trash_page(victims[0]), victims.pop(0).replace("-", ""))[1]
    return scenario


SCENARIOS = {
    "zendesk": zendesk_scenario,
    "github": github_scenario,
    "confluence": confluence_scenario,
    "notion": notion_scenario,
}
API_BASE_VARS = {
    "zendesk": "ZENDESK_API_BASE",
    "github": "GITHUB_API_URL",
    "confluence": "CONFLUENCE_API_BASE",
    "notion": "NOTION_API_BASE",
}


def chunks_of(index: KnowledgeIndex, source: str) -> dict[str, list[str]]:
    rows = index.table.to_lance().to_table(columns=["doc_id", "text"], filter=f"source = '{source}'").to_pylist()
    by_doc: dict[str, list[str]] = {}
    for row in rows:
        by_doc.setdefault(row["doc_id"], []).append(row["text"])
    return by_doc


@pytest.mark.parametrize("kind", sorted(SCENARIOS))
async def test_connector_sync_contract(kind, tmp_path, embedder, monkeypatch):
    scenario = SCENARIOS[kind]()
    async with scenario.emulator as api:
        monkeypatch.setenv(API_BASE_VARS[kind], api.base_url)
        for name, value in scenario.env.items():
            monkeypatch.setenv(name, value)
        index = KnowledgeIndex(tmp_path / "index", embedder)

        # 1. First sync: every document, over several pages, through one 429.
        api.fail(429, retry_after=1, when=scenario.later_page)
        first = await index.refresh([scenario.uri])
        assert first.failed_sources == [] and first.failures == [], first.failures
        assert api.statuses[429] == 1
        docs = chunks_of(index, scenario.uri)
        assert sorted(docs) == sorted(scenario.ids)
        assert first.total("added") == COUNT and first.chunks_embedded == sum(len(c) for c in docs.values())

        # 2. Nothing changed: no embeddings, a handful of calls.
        api.reset_counts()
        encoded = embedder.texts_encoded  # the model's own count, not the report's
        second = await index.refresh([scenario.uri])
        assert second.chunks_embedded == 0 and second.total("unchanged") == COUNT
        assert embedder.texts_encoded == encoded
        assert second.version_after == second.version_before
        assert len(api.requests) <= 5, api.requests

        # 3. One edit re-embeds only that document's chunks.
        edited = scenario.edit()
        third = await index.refresh([scenario.uri])
        after = chunks_of(index, scenario.uri)
        assert third.total("updated") == 1 and third.total("added") == 0
        assert third.chunks_embedded == len(after[edited]) == embedder.texts_encoded - encoded
        assert any("press Apply" in text for text in after[edited])

        # 4. One deletion (archive) removes the document, and only it.
        deleted = scenario.delete()
        fourth = await index.refresh([scenario.uri])
        after = chunks_of(index, scenario.uri)
        assert fourth.total("deleted") == 1 and deleted not in after and len(after) == COUNT - 1
        assert fourth.chunks_embedded == 0

        # 5. Bad credentials: a clear error naming the env var; nothing is deleted, even what vanished.
        scenario.delete()  # another removal upstream, which a failing sync must not apply
        for name, value in scenario.bad_env.items():
            monkeypatch.setenv(name, value)
        fifth = await index.refresh([scenario.uri])
        assert fifth.failed_sources == [scenario.uri]
        assert any("401" in failure and scenario.env_var_named in failure for failure in fifth.failures), fifth.failures
        assert scenario.uri in fifth.summary and "kept" in fifth.summary
        assert len(chunks_of(index, scenario.uri)) == COUNT - 1 and fifth.total("deleted") == 0
