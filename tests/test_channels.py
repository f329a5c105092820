"""Per-channel knowledge through the whole pipeline: a channel restricted to one source never
retrieves or cites another, and its own thresholds apply."""

from __future__ import annotations

import pytest

from bot.engine.channels import ChannelConfigError, policies_from_file
from bot.engine.pipeline import Pipeline
from bot.engine.types import Question
from bot.settings import Settings
from knowledge.index import KnowledgeIndex
from knowledge.search import Searcher

BILLING = {
    "invoices.md": "---\ntitle: Download an invoice\nurl: https://billing.example/invoices\n---\n"
    "Open Billing, then Invoices, and click Download next to the month you need. Invoices are PDF files.",
    "refunds.md": "---\ntitle: Refund a payment\nurl: https://billing.example/refunds\n---\n"
    "Open the payment and click Refund. Refunds reach the card in 5 to 10 business days.",
}
GENERAL = {
    "password.md": "---\ntitle: Reset your password\nurl: https://help.example/password\n---\n"
    "To reset your password open Settings, Security, and click Reset password. A reset link is emailed to you.",
    "sso.md": "---\ntitle: Single sign-on\nurl: https://help.example/sso\n---\n"
    "SAML single sign-on is available on the Enterprise plan. Upload the IdP metadata under Settings, Security.",
}


def write(folder, files):
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
async def setup(tmp_path, embedder):
    billing, general = write(tmp_path / "billing", BILLING), write(tmp_path / "general", GENERAL)
    sources_file = tmp_path / "supportbot-sources.yml"
    sources_file.write_text(
        f"sources:\n  - name: billing\n    uri: {billing}\n  - name: general\n    uri: {general}\n"
        "channels:\n  C0BILLING:\n    sources: [billing]\n    answer_threshold: 0.99\n    caveat_threshold: 0.98\n"
    )
    settings = Settings(data_dir=tmp_path / "data", sources_file=sources_file, self_calibration=False, _env_file=None)
    index = KnowledgeIndex.from_settings(settings, embedder)
    await index.refresh([str(billing), str(general)])
    pipeline = Pipeline.from_settings(settings, index=index, searcher=Searcher.from_settings(settings, index))
    return pipeline, str(billing.resolve()), str(general.resolve())


async def test_a_restricted_channel_never_cites_another_source(setup):
    pipeline, billing, general = setup
    question = "How do I reset my password?"
    anywhere = await pipeline.answer(Question(text=question, channel="C0GENERAL"))
    assert "https://help.example/password" in {c.url for c in anywhere.citations}  # the best source exists

    restricted = await pipeline.answer(Question(text=question, channel="C0BILLING"))
    assert restricted.retrieved and {chunk.source for chunk in restricted.retrieved} == {billing}
    assert all(c.url.startswith("https://billing.example/") for c in restricted.citations)
    assert general not in {chunk.source for chunk in restricted.retrieved}


async def test_a_channels_own_thresholds_apply(setup):
    pipeline, _, _ = setup
    question = "refund time"  # a good but not perfect match (confidence about 0.9)
    default = await pipeline.answer(Question(text=question, channel="C0GENERAL"))
    strict = await pipeline.answer(Question(text=question, channel="C0BILLING"))
    assert default.decision.value == "answer" and 0.5 < default.confidence < 0.98
    assert strict.decision.value == "escalate"  # the same answer falls under the channel's 0.98 line


def test_channel_config_errors(tmp_path):
    path = tmp_path / "supportbot-sources.yml"
    for channels, message in [
        ("  C1:\n    sources: [nowhere]\n", "channels.C1.sources: not declared under sources"),
        ("  C1:\n    answer_threshold: 2\n", "channels.C1.answer_threshold must be a number between 0 and 1"),
        ("  C1:\n    escalate_to: C2\n", "channels.C1: unknown keys ['escalate_to']"),
        ("  C1:\n    answer_threshold: 0.3\n    caveat_threshold: 0.5\n", "must not be above answer_threshold"),
    ]:
        path.write_text(f"sources:\n  - name: kb\n    uri: examples/knowledge\nchannels:\n{channels}")
        with pytest.raises(ChannelConfigError, match=channels and message.replace("[", r"\[").replace("]", r"\]")):
            policies_from_file(path)
