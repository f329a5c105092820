"""The weekly export through the real interaction store: votes, resolutions, review file, PII, idempotency."""

from __future__ import annotations

import json

import pytest

from bot.engine.types import Answer, Citation, Decision, Question, RetrievedChunk
from bot.store import InteractionStore
from evals.cases import append_cases, case_id_for_interaction, load_cases, read_cases
from evals.export import export_feedback, parse_since, rejected_path_for
from tests.conftest import SAMPLE_EVALS

REFUND_URL = "https://help.tallybook.example/payments/refund-a-payment"
REFUND_TEXT = "Open the payment and click Refund. Card payments can be refunded within 180 days."


def chunk(doc_id="payments/refund-a-payment.md", url=REFUND_URL + "#full-refunds", similarity=0.72, text=REFUND_TEXT):
    return RetrievedChunk(
        chunk_id=f"{doc_id}#0",
        doc_id=doc_id,
        title="Refund a payment",
        url=url,
        text=text,
        score=0.9,
        vector_similarity=similarity,
    )


def answered(question: str, text: str, *, decision=Decision.ANSWER, cited=True, retrieved=None, asker="U0ASKER"):
    q = Question(text=question, asker=asker, channel="C0SUPPORT")
    citations = (
        [
            Citation(
                number=1,
                doc_id="payments/refund-a-payment.md",
                chunk_id="payments/refund-a-payment.md#0",
                url=REFUND_URL + "#full-refunds",
                title="Refund a payment",
                cited_text="click Refund",
            )
        ]
        if cited
        else []
    )
    a = Answer(
        interaction_id=q.interaction_id,
        question=question,
        text=text,
        citations=citations,
        retrieved=retrieved if retrieved is not None else [chunk()],
        confidence=0.8 if cited else 0.2,
        decision=decision,
        reasons=[] if cited else ["no source covers the question"],
    )
    return q, a


@pytest.fixture
def store(tmp_path):
    return InteractionStore(tmp_path / "logs")


async def log(store, pair):
    await store.log_answer(*pair, slack={"surface": "mention"})
    return pair[1].interaction_id


async def test_export_from_the_real_store(tmp_path, store, embedder):
    frozen = tmp_path / "frozen.jsonl"
    frozen.write_text(SAMPLE_EVALS.read_text(encoding="utf-8"), encoding="utf-8")
    candidates, review = tmp_path / "out" / "candidates.jsonl", tmp_path / "out" / "review.jsonl"

    # Thumbs-up (twice, near-identical questions from two people: merged into one case).
    up = await log(
        store,
        answered(
            "<@U0BOT> How do I refund a customer's card payment? I'm jane.doe@acme.com",
            "Open the payment and click Refund [1].",
        ),
    )
    twin = await log(
        store,
        answered(
            "how do i refund a customer card payment?? I'm jane.doe@acme.com", "Open the payment and click Refund [1]."
        ),
    )
    # Thumbs-up on a question the frozen set already has (s002): merged into it, not added.
    known = await log(
        store,
        answered("How long after a payment can we still refund it to the customers card?", "Within 180 days [1]."),
    )
    # Thumbs-down, no resolution: goes to the review file.
    down = await log(
        store,
        answered(
            "Why was my customer charged twice? call me at +1 415 555 0100", "Open the payment and click Refund [1]."
        ),
    )
    # Escalated for low confidence, then a human answered: a knowledge gap.
    gap = await log(
        store,
        answered(
            "Can customers pay invoices with PayPal?",
            "I could not find this in the help center.",
            decision=Decision.ESCALATE,
            cited=False,
            retrieved=[
                chunk(
                    "payments/accept-online-payments.md",
                    "https://help.tallybook.example/payments/accept-online-payments",
                    similarity=0.41,
                )
            ],
        ),
    )
    # Answered with sources, the asker wanted a human anyway, who answered: answerable, gold = cited page.
    handoff = await log(store, answered("Can I refund only part of a payment?", "Yes [1]."))
    # An escalation still open: nothing to learn yet.
    still_open = await log(
        store, answered("Is there an offline mode?", "Not sure.", decision=Decision.ESCALATE, cited=False)
    )

    await store.record_feedback(up, user="U1", rating="up")
    await store.record_feedback(twin, user="U2", rating="up")
    await store.record_feedback(known, user="U3", rating="up")
    await store.record_feedback(
        down, user="U4", rating="down", comment="Wrong article, ask <@U0LEAD> or mail ops@acme.com"
    )
    await store.record_escalation(gap, status="open", escalation_ts="1.1")
    await store.record_escalation(gap, status="claimed", user="UHUMAN")
    await store.record_escalation(
        gap,
        status="resolved",
        user="UHUMAN",
        human_answer="PayPal is not supported; card, ACH and SEPA are. Ping <#C0FIN|finance> "
        "with key sk-ant-api03-SECRETSECRET if unsure.",
    )
    await store.record_escalation(
        handoff,
        status="resolved",
        user="UHUMAN",
        human_answer="Yes, enter a smaller amount before confirming the refund.",
    )
    await store.record_escalation(still_open, status="open")

    result = await export_feedback(
        store, embedder, since=parse_since("7d"), candidates_path=candidates, review_path=review, frozen_paths=[frozen]
    )
    cases = {case.interaction_id: case for case in load_cases(candidates)}
    assert set(cases) == {up, gap, handoff}
    assert result.merged == {twin: case_id_for_interaction(up), known: "s002"}

    thumbs_up = cases[up]
    assert thumbs_up.id == case_id_for_interaction(up) and thumbs_up.origin == "thumbs-up"
    assert thumbs_up.question == "How do I refund a customer's card payment? I'm <EMAIL>"
    assert thumbs_up.reference_answer == "Open the payment and click Refund."
    assert thumbs_up.gold_sources == [REFUND_URL] and thumbs_up.answerable
    assert thumbs_up.model_extra["merged_from"] == [twin]

    knowledge_gap = cases[gap]
    assert knowledge_gap.origin == "human-resolution" and not knowledge_gap.answerable
    assert knowledge_gap.gold_sources == [] and knowledge_gap.topic == "payments"
    assert knowledge_gap.reference_answer == (
        "PayPal is not supported; card, ACH and SEPA are. Ping <CHANNEL> with key <API_KEY> if unsure."
    )
    assert cases[handoff].answerable and cases[handoff].gold_sources == [REFUND_URL]
    assert cases[handoff].reference_answer.startswith("Yes, enter a smaller amount")

    [needs_review] = load_cases(review)
    assert needs_review.interaction_id == down and needs_review.origin == "thumbs-down"
    assert needs_review.reference_answer is None
    assert needs_review.question == "Why was my customer charged twice? call me at <PHONE>"
    assert needs_review.model_extra["comments"] == ["Wrong article, ask <USER> or mail <EMAIL>"]

    everything = candidates.read_text() + review.read_text()
    for secret in ("jane.doe@acme.com", "415 555", "U0LEAD", "C0FIN", "sk-ant-", "ops@acme.com"):
        assert secret not in everything

    # Idempotent: a second export adds nothing, to either file.
    before = candidates.read_text(), review.read_text()
    again = await export_feedback(
        store, embedder, since=parse_since("7d"), candidates_path=candidates, review_path=review, frozen_paths=[frozen]
    )
    assert again.added == [] and again.review_added == [] and (candidates.read_text(), review.read_text()) == before

    # The thumbs-down answer is later resolved by a human: now it becomes a candidate (once).
    await store.record_escalation(
        down, status="resolved", user="UHUMAN", human_answer="It was a duplicate card payment; refund one of them."
    )
    third = await export_feedback(
        store, embedder, since=None, candidates_path=candidates, review_path=review, frozen_paths=[frozen]
    )
    assert [case.interaction_id for case in third.added] == [down]
    assert third.added[0].answerable and third.added[0].gold_sources == [REFUND_URL]
    fourth = await export_feedback(
        store, embedder, since=None, candidates_path=candidates, review_path=review, frozen_paths=[frozen]
    )
    assert fourth.added == [] and fourth.review_added == []

    # Cases accepted into the frozen set (new id, same interaction) or rejected are never offered again.
    accepted = cases[up].model_copy(update={"id": "s056"})
    append_cases(frozen, [accepted])
    append_cases(rejected_path_for(candidates), [cases[gap]])
    candidates.unlink()
    fifth = await export_feedback(
        store, embedder, since=None, candidates_path=candidates, review_path=review, frozen_paths=[frozen]
    )
    assert {case.interaction_id for case in fifth.added} == {handoff, down}


@pytest.fixture(params=["lancedb", "postgres"])
def configured_store(request, tmp_path, monkeypatch):
    """The store `supportbot` opens from its settings: the data dir's logs, or PostgreSQL when
    SUPPORTBOT_DATABASE_URL is set (a real server); the CLI is then expected to read the same."""
    monkeypatch.delenv("SUPPORTBOT_DATABASE_URL", raising=False)
    if request.param == "lancedb":
        return InteractionStore(tmp_path / "logs")
    from bot.postgres.store import PostgresStore

    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", url)
    return PostgresStore(url)


def test_export_cli_json(tmp_path, configured_store):
    import asyncio

    from click.testing import CliRunner

    from bot.cli import main

    store = configured_store
    pair = answered("How do I refund a customer's card payment?", "Click Refund [1].")

    async def setup():
        await log(store, pair)
        await store.record_feedback(pair[1].interaction_id, user="U1", rating="up")
        await store.aclose()

    asyncio.run(setup())
    out = tmp_path / "c.jsonl"
    runner = CliRunner()
    args = ["evals", "export", "--data-dir", str(tmp_path), "--out", str(out), "--frozen", str(SAMPLE_EVALS), "--json"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["added"] == [case_id_for_interaction(pair[1].interaction_id)]
    second = runner.invoke(main, args)
    assert json.loads(second.stdout)["added"] == [] and json.loads(second.stdout)["skipped"] == 1
    assert len(read_cases(out)[0]) == 1
    bad = runner.invoke(main, ["evals", "export", "--data-dir", str(tmp_path), "--since", "last tuesday"])
    assert bad.exit_code == 2 and "--since" in bad.output


async def test_a_vote_on_an_old_answer_is_still_exported(tmp_path, store, embedder):
    from datetime import timedelta

    from bot.engine.types import utc_now

    recent = answered("How do I refund a customer's card payment?", "Click Refund [1].")
    old_question, old_answer = answered("Which plans include SAML single sign-on?", "Enterprise [1].")
    old_answer.created_at = utc_now() - timedelta(days=40)
    for pair in (recent, (old_question, old_answer)):
        await log(store, pair)
        await store.record_feedback(pair[1].interaction_id, user="U1", rating="up")
    result = await export_feedback(
        store, embedder, since=parse_since("7d"), candidates_path=tmp_path / "c.jsonl", review_path=tmp_path / "r.jsonl"
    )
    assert {case.interaction_id for case in result.added} == {recent[1].interaction_id, old_answer.interaction_id}
