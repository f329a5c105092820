"""The refresh gate: a refresh that makes the frozen eval set worse is rolled back and reported.

Real index, real calibration, real pipeline (offline answerer): a small help center (the sample's
payments and invoices folders) and the sample eval cases about it.
"""

from __future__ import annotations

import json
import shutil
from functools import partial

import pytest

from evals.gate import describe_gate, document_changes, refresh_gated
from tests.conftest import SAMPLE_EVALS, SAMPLE_KNOWLEDGE
from tests.emulators.slack_payloads import form_body, slash_command_form

pytestmark = pytest.mark.timeout(600)

FOLDERS = ("payments", "invoices")
REMOVED = ("payments/refund-a-payment.md", "payments/ach-direct-debit.html")  # the gold of 5 cases


@pytest.fixture
def gate_setup(tmp_path, embedder):
    from bot.settings import Settings
    from knowledge.index import KnowledgeIndex

    kb = tmp_path / "kb"
    for folder in FOLDERS:
        shutil.copytree(SAMPLE_KNOWLEDGE / folder, kb / folder)
    shutil.copy(SAMPLE_KNOWLEDGE / "supportbot-source.yml", kb / "supportbot-source.yml")
    cases = [json.loads(line) for line in SAMPLE_EVALS.read_text(encoding="utf-8").splitlines() if line.strip()]
    about = [
        c for c in cases if c["gold_sources"] and all(any(f"/{f}/" in g for f in FOLDERS) for g in c["gold_sources"])
    ]
    unanswerable = [c for c in cases if not c["answerable"]][:3]
    dataset = tmp_path / "frozen.jsonl"
    dataset.write_text("".join(json.dumps(c) + "\n" for c in about + unanswerable), encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data", sources=[str(kb)], eval_dataset=dataset, _env_file=None)
    return settings, kb, KnowledgeIndex.from_settings(settings, embedder), about


async def test_a_refresh_that_loses_the_documents_of_five_cases_is_blocked_and_the_old_version_served(gate_setup):
    from bot.engine.pipeline import Pipeline
    from bot.engine.types import Question

    settings, kb, index, about = gate_setup
    removed_urls = {f"https://help.tallybook.example/{name.rsplit('.', 1)[0]}" for name in REMOVED}
    behind = [c["id"] for c in about if removed_urls & set(c["gold_sources"])]
    assert len(behind) == 5

    first = await refresh_gated(index, [str(kb)], settings)
    assert first.gate.status == "passed" and "first version" in first.gate.reason
    assert first.report.calibration is not None  # refreshes still go through refresh_calibrated
    served = index.serving_version()

    for name in REMOVED:
        (kb / name).unlink()
    blocked = await refresh_gated(index, [str(kb)], settings)
    gate = blocked.gate
    assert gate.status == "blocked" and gate.baseline_version == served
    assert any(line.startswith("retrieval.hit@k") for line in gate.regressions)
    assert {case.id for case in gate.fallen} >= set(behind)
    assert sorted(gate.documents.deleted) == sorted(REMOVED) and not gate.documents.added
    text = describe_gate(gate)
    assert "BLOCKED" in text and "payments/refund-a-payment.md" in text and behind[0] in text

    # the bot keeps answering from the previous version: the removed page is still there and cited
    assert index.serving_version() == served == gate.serving_version
    assert ("payments", "payments/refund-a-payment.md") in {(d.split("/")[0], d) for _, d in index.doc_hashes()}
    pipeline = Pipeline.from_settings(settings, index=index, embedder=index.embedder)
    answer = await pipeline.answer(
        Question(text="How long after a payment can we still refund it to the customer's card?")
    )
    assert answer.retrieved[0].doc_id == "payments/refund-a-payment.md" and not answer.escalated

    forced = await refresh_gated(index, [str(kb)], settings, force=True)
    assert forced.gate.status == "forced" and forced.gate.regressions
    assert "payments/refund-a-payment.md" not in {doc for _, doc in index.doc_hashes()}


def test_document_changes_names_added_updated_and_deleted():
    before = {("s", "a"): "1", ("s", "b"): "2", ("s", "c"): "3"}
    after = {("s", "a"): "1", ("s", "b"): "9", ("s", "d"): "4"}
    changes = document_changes(before, after)
    assert (changes.added, changes.updated, changes.deleted) == (["d"], ["b"], ["c"])


async def test_kb_refresh_in_slack_is_gated_and_the_admins_are_told(tmp_path, sample_settings, engine_parts, embedder):
    """`/kb-refresh` with the refresher `supportbot serve` hands the bot: blocked, reported, then forced."""
    from bot.cli import gated_refresher
    from knowledge.index import KnowledgeIndex
    from tests.test_slack_e2e import ADMIN, running_bot

    kb = tmp_path / "kb"
    kb.mkdir()
    for name in ("api/api-keys.md", "api/rate-limits.md"):
        shutil.copy(SAMPLE_KNOWLEDGE / name, kb / name.split("/")[1])
    (kb / "supportbot-source.yml").write_text("base_url: https://help.tallybook.example/api/\n", encoding="utf-8")
    cases = [json.loads(line) for line in SAMPLE_EVALS.read_text(encoding="utf-8").splitlines() if line.strip()]
    about = [c for c in cases if any("/api/api-keys" in g or "/api/rate-limits" in g for g in c["gold_sources"])]
    dataset = tmp_path / "frozen.jsonl"
    dataset.write_text("".join(json.dumps(c) + "\n" for c in about), encoding="utf-8")
    own = sample_settings.model_copy(
        update={"data_dir": tmp_path / "data", "sources": [str(kb)], "eval_dataset": dataset}
    )
    parts = {**engine_parts, "index": KnowledgeIndex.from_settings(own, embedder)}
    async with running_bot(tmp_path, own, parts) as bot:
        bot.state.refresher = gated_refresher
        await bot.command("/kb-refresh", user=ADMIN)
        [first] = await bot.emu.wait_for("chat.postMessage", timeout=120)
        assert "added 2" in first.args["text"] and "Refresh gate: passed" in first.args["text"]

        (kb / "rate-limits.md").unlink()
        await bot.command("/kb-refresh", user=ADMIN)
        calls = await bot.emu.wait_for("chat.postMessage", 3, timeout=120)
        announced, told = calls[1].args, calls[2].args
        assert "deleted 1" in announced["text"] and "BLOCKED" in announced["text"]
        assert told["channel"] == ADMIN and "BLOCKED" in told["text"] and "rate-limits.md" in told["text"]
        assert "rate-limits.md" in {doc for _, doc in parts["index"].doc_hashes()}  # still served

        form = slash_command_form("/kb-refresh", text="--force", user_id=ADMIN, response_url=bot.emu.response_url())
        await bot.post(form_body(form), "application/x-www-form-urlencoded")
        calls = await bot.emu.wait_for("chat.postMessage", 5, timeout=120)
        assert "--force kept" in calls[3].args["text"] and "rate-limits.md" not in {
            doc for _, doc in parts["index"].doc_hashes()
        }


async def test_an_eval_set_about_other_knowledge_does_not_gate_the_refresh(gate_setup, tmp_path):
    """The default eval set is the sample help center's: on a team's own knowledge it names no
    document, and gating on it would block or pass refreshes at random, so the gate steps aside."""
    settings, kb, index, _ = gate_setup
    elsewhere = tmp_path / "elsewhere.jsonl"
    case = {"id": "x1", "question": "How do I rotate the VPN key?", "answerable": True}
    elsewhere.write_text(json.dumps(case | {"gold_sources": ["https://wiki.example/vpn"]}) + "\n", encoding="utf-8")
    settings = settings.model_copy(update={"eval_dataset": elsewhere})
    await refresh_gated(index, [str(kb)], settings)
    (kb / REMOVED[0]).unlink()
    gated = await refresh_gated(index, [str(kb)], settings)
    assert gated.gate.status == "skipped" and "names none of this index's documents" in gated.gate.reason
    assert REMOVED[0] not in {doc for _, doc in index.doc_hashes()}  # published, not held back


async def test_a_scheduled_sync_is_gated_too(gate_setup):
    """`serve`'s scheduled sync goes through the same gate: a sync that loses the documents of five
    cases is rolled back, and the admins' alert is attempted (none is configured here)."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.cli import gated_sync
    from bot.sync import SourceSyncScheduler
    from knowledge.connectors.registry import SourceSpec

    settings, kb, index, _ = gate_setup
    spec = SourceSpec(str(kb), every_seconds=3600)
    await refresh_gated(index, [spec], settings)
    served = index.serving_version()
    for name in REMOVED:
        (kb / name).unlink()
    admins = AsyncWebClient(token="xoxb-none", base_url="http://127.0.0.1:9/")  # nobody to tell: never raises
    syncs = SourceSyncScheduler(index, settings, [spec], refresh=partial(gated_sync, admins=admins))
    report = await syncs.sync_once(spec)
    assert report is not None and report.version_after != served  # the sync wrote a version ...
    assert index.serving_version() == served  # ... and the gate rolled it back
    assert REMOVED[0] in {doc for _, doc in index.doc_hashes()}
