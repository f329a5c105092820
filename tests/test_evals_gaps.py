"""Knowledge gaps in the weekly digest: escalated questions without a learned answer, by topic, with links."""

from __future__ import annotations

from bot.engine.types import Answer, Decision, Question, RetrievedChunk
from bot.store import InteractionStore
from evals.gaps import gaps_text, knowledge_gaps
from evals.weekly import weekly_gaps
from knowledge.learned import LearnedEntry, LearnedStore


def chunk(doc_id: str) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id=f"{doc_id}#0", doc_id=doc_id, title=doc_id, url=f"https://h.example/{doc_id}", text="t", score=0.3
    )


async def test_weekly_gaps_cluster_escalations_without_a_learned_answer(tmp_path, settings):
    store = InteractionStore(tmp_path / "logs")
    asked = [
        ("Can I pay payouts in yen?", "payments/payouts.md"),
        ("Do payouts work on Sundays?", "payments/sepa.md"),
        ("Is there a payout API for Brazil?", "payments/payouts.md"),
        ("Can invoices be printed in Klingon?", "invoices/languages.md"),
        ("Answered already: payouts to Mars?", "payments/payouts.md"),
        ("Answered by the bot", "api/keys.md"),
    ]
    ids = []
    for number, (text, doc) in enumerate(asked):
        question = Question(text=text, channel="C1", thread_ts=f"1.{number}")
        escalated = number != 5
        answer = Answer(
            interaction_id=question.interaction_id,
            question=text,
            text="…",
            retrieved=[chunk(doc)],
            decision=Decision.ESCALATE if escalated else Decision.ANSWER,
        )
        await store.log_answer(question, answer)
        if escalated:
            await store.record_escalation(
                question.interaction_id, status="open", permalink=f"https://x.slack.com/archives/C1/p{number}"
            )
        ids.append(question.interaction_id)
    await store.record_escalation(ids[4], status="resolved", human_answer="No.")
    learned = LearnedStore(settings.data_dir)
    learned.save(
        LearnedEntry(
            id="e1",
            title=asked[4][0],
            answer="No.",
            thread_link=None,
            answered_by="U1",
            answered_by_name="ana",
            answered_at="2026-11-30T10:00:00+00:00",
            interaction_id=ids[4],
        )
    )
    learned.approve("e1", "U2")

    text = weekly_gaps(store, settings, None)
    assert text.splitlines()[0].startswith("*Knowledge gaps*")
    assert "• *payments*: 3 question(s)" in text and "• *invoices*: 1 question(s)" in text
    assert text.index("payments") < text.index("invoices")  # biggest first
    assert "<https://x.slack.com/archives/C1/p0|Can I pay payouts in yen?>" in text
    assert "Mars" not in text and "Answered by the bot" not in text


def test_no_gaps_no_lines_and_the_limit():
    assert gaps_text([]) == ""
    rows = [{"interaction_id": str(n), "question": f"q{n}", "retrieved": [{"doc_id": f"t{n}/d"}]} for n in range(8)]
    feedback = [{"interaction_id": str(n), "kind": "escalation", "status": "open"} for n in range(8)]
    assert len(knowledge_gaps(rows, feedback, set(), limit=5)) == 5
    assert knowledge_gaps(rows, [{**f, "status": "failed"} for f in feedback], set()) == []
