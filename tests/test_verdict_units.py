"""Claude's verdict, pure parts: the tag parser, the streaming gate, citation verification, `combine`."""

from __future__ import annotations

import pytest

from bot.engine.citations import Segment, Span
from bot.engine.claude import VerdictGate, strip_verdict
from bot.engine.confidence import Judgement
from bot.engine.types import Decision, RetrievedChunk
from bot.engine.verdict import (
    FULLY_CITED,
    RETRIEVAL_FLOOR,
    CitationCheck,
    Verdict,
    combine,
    parse_tag,
    review,
    split_tag,
    top_similarity,
    verify_citations,
)

A, C, E = Decision.ANSWER, Decision.ANSWER_WITH_CAVEAT, Decision.ESCALATE


@pytest.mark.parametrize(
    "tag, verdict",
    [
        ("<verdict>full</verdict>", Verdict.FULL),
        ("<VERDICT> Partial </Verdict>", Verdict.PARTIAL),
        ("<verdict>partly</verdict>\n", Verdict.PARTIAL),
        ("<verdict>none</verdict>", Verdict.NONE),
        ("<verdict>not  at all</verdict>", Verdict.NONE),
        ("<verdict>full", Verdict.FULL),  # cut before its closing tag, nothing after: still readable
        ("<verdict>maybe</verdict>", Verdict.MALFORMED),
        ("<verdict>full</verdict", Verdict.MALFORMED),
        ("<verdict>full</verdict> Anything else?", Verdict.MALFORMED),
        ("<verdict full>", Verdict.MALFORMED),
        ("<verdict>", Verdict.MALFORMED),
        ("", Verdict.MISSING),
    ],
)
def test_parse_tag(tag, verdict):
    assert parse_tag(tag) is verdict


def test_split_tag_cuts_from_the_first_tag_and_the_space_before_it():
    assert split_tag("Refunds take 5 days.\n\n<verdict>full</verdict>\n") == ("Refunds take 5 days.", Verdict.FULL)
    assert split_tag("No tag here. <b>bold</b>") == ("No tag here. <b>bold</b>", Verdict.MISSING)
    assert split_tag("Text <Verdict>odd</verdict> more") == ("Text", Verdict.MALFORMED)


def test_strip_verdict_across_segments_keeps_citations_of_kept_text():
    segments = [
        Segment("Intro. "),
        Segment("Cited fact.", [Span(0, "Cited fact.")]),
        Segment("\n\n<ver"),
        Segment("dict>partial</verdict>", [Span(1, "bogus")]),
    ]
    kept, verdict = strip_verdict(segments)
    assert verdict is Verdict.PARTIAL
    assert [(s.text, s.spans) for s in kept] == [("Intro. ", []), ("Cited fact.", [Span(0, "Cited fact.")])]
    glued = [Segment("Fact one.", [Span(0, "x")]), Segment(" Fact two. <verdict>full</verdict>", [Span(1, "y")])]
    kept, verdict = strip_verdict(glued)
    assert verdict is Verdict.FULL and [s.text for s in kept] == ["Fact one.", " Fact two."]
    assert kept[1].spans == [Span(1, "y")]
    untouched = [Segment("Plain.")]
    assert strip_verdict(untouched) == (untouched, Verdict.MISSING)


ANSWER = "Refunds to cards are possible for 120 days after the payment. <b>Note</b>: ACH differs."


@pytest.mark.parametrize("size", range(1, 12))
@pytest.mark.parametrize(
    "ending", ["\n\n<verdict>full</verdict>", "\n<VERDICT>none</VERDICT>\n", "\n\n<verdict>maybe</verdict", "<verdict>"]
)
async def test_the_gate_never_forwards_any_part_of_the_tag(size, ending):
    forwarded: list[str] = []

    async def forward(piece: str) -> None:
        forwarded.append(piece)

    gate = VerdictGate(forward)
    text = ANSWER + ending
    for i in range(0, len(text), size):
        await gate.feed(text[i : i + size])
    await gate.close()
    streamed = "".join(forwarded)
    assert streamed.rstrip() == ANSWER and "verd" not in streamed.lower()
    assert all(piece for piece in forwarded)


async def test_the_gate_releases_a_tail_that_only_looked_like_the_tag():
    forwarded: list[str] = []

    async def forward(piece: str) -> None:
        forwarded.append(piece)

    gate = VerdictGate(forward)
    for piece in ["Use the <", "ve", "ry first option <", "v"]:
        await gate.feed(piece)
    assert "".join(forwarded) == "Use the <very first option "
    await gate.close()
    assert "".join(forwarded) == "Use the <very first option <v"


def chunk(text: str, similarity: float | None = 0.6) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id="c", doc_id="d", title="T", url="u", text=text, score=0.5, vector_similarity=similarity
    )


def test_citations_are_verified_against_the_chunk_they_point_at():
    sources = ["Refunds to cards are possible\nfor 120 days.  ACH refunds take 5 days.", "Other page."]
    spans = [
        Span(0, "Refunds to cards are possible for  120 days."),  # whitespace differs: verified
        Span(0, "Refunds to cards are possible for 120 days."),  # the same span again: counted once
        Span(1, "Other page."),
        Span(1, "ACH refunds take 5 days."),  # in a source, but not the one it points at
        Span(2, "Other page."),  # a search result we never sent
        Span(0, "  "),  # nothing cited
        Span(0, "Refunds are possible for ten years."),  # invented
    ]
    check = verify_citations(spans, sources, coverage=0.95)
    assert (check.total, check.verified, check.unverified) == (6, 2, 4) and not check.fully_cited
    assert verify_citations(spans[:3], sources, 0.95).fully_cited
    assert not verify_citations(spans[:3], sources, FULLY_CITED - 0.01).fully_cited
    assert not verify_citations([], sources, 1.0).fully_cited


def test_top_similarity():
    assert top_similarity([chunk("a", 0.3), chunk("b", None), chunk("c", 0.7)]) == 0.7
    assert top_similarity([chunk("a", None)]) == 0.0 and top_similarity([]) == 0.0


VERIFIED = CitationCheck(total=3, verified=3, coverage=0.95)
UNVERIFIABLE = CitationCheck(total=3, verified=2, coverage=0.95)
ABSENT = CitationCheck()
PARTLY_CITED = CitationCheck(total=2, verified=2, coverage=0.5)
HIGH, LOW = 0.6, RETRIEVAL_FLOOR - 0.01  # best-source similarity: fine / essentially nothing found


def judged(decision: Decision) -> Judgement:
    confidence = {A: 0.8, C: 0.4, E: 0.22}[decision]
    return Judgement(confidence, decision, ["top source similarity 0.60", f"confidence {confidence:.2f}"])


@pytest.mark.parametrize(
    "verdict, retrieval, citations, similarity, decision, lead",
    [
        (
            Verdict.FULL,
            E,
            VERIFIED,
            HIGH,
            A,
            "Claude: the sources fully answer it; 3/3 citations verified; retrieval confidence 0.22 would have escalated",
        ),
        (Verdict.FULL, A, VERIFIED, HIGH, A, "Claude: the sources fully answer it"),
        (Verdict.FULL, A, VERIFIED, LOW, E, "retrieval found essentially nothing"),
        (Verdict.FULL, E, PARTLY_CITED, HIGH, E, "retrieval confidence 0.22 decided"),
        (
            Verdict.FULL,
            A,
            ABSENT,
            HIGH,
            A,
            "retrieval confidence 0.80 decided: Claude says the sources fully answer it, but the answer cites nothing",
        ),
        (Verdict.FULL, A, UNVERIFIABLE, HIGH, C, "retrieval confidence 0.80 decided"),
        (Verdict.FULL, C, UNVERIFIABLE, HIGH, E, "but 2/3 citations verified (1 not found in its source)"),
        (Verdict.PARTIAL, A, VERIFIED, HIGH, C, "Claude: the sources only partly answer it"),
        (Verdict.PARTIAL, E, VERIFIED, HIGH, C, "Claude: the sources only partly answer it"),
        (Verdict.PARTIAL, A, ABSENT, HIGH, C, "retrieval confidence 0.80 decided"),
        (Verdict.PARTIAL, A, UNVERIFIABLE, HIGH, E, "unverifiable citation lowered the decision to escalated"),
        (
            Verdict.NONE,
            A,
            VERIFIED,
            HIGH,
            E,
            "Claude: the sources don't answer it; retrieval confidence 0.80 would have answered",
        ),
        (Verdict.MISSING, A, VERIFIED, HIGH, A, "retrieval confidence 0.80 decided (Claude gave no verdict)"),
        (Verdict.MISSING, E, VERIFIED, HIGH, E, "retrieval confidence 0.22 decided (Claude gave no verdict)"),
        (
            Verdict.MALFORMED,
            C,
            VERIFIED,
            LOW,
            C,
            "retrieval confidence 0.40 decided (Claude gave an unreadable verdict)",
        ),
        (Verdict.MALFORMED, A, UNVERIFIABLE, HIGH, C, "unverifiable citation lowered the decision to answered with a"),
    ],
)
def test_combine(verdict, retrieval, citations, similarity, decision, lead):
    before = judged(retrieval)
    after = combine(before, verdict, citations, similarity=similarity)
    assert after.decision is decision
    assert lead in after.reasons[0]
    assert after.reasons[1:] == before.reasons and after.confidence == before.confidence


def test_without_a_verdict_the_judgement_is_unchanged():
    for decision in (A, C, E):
        before = judged(decision)
        assert combine(before, None, ABSENT, similarity=0.0) is before
        assert review(before, None, ABSENT, [chunk("x")]) == (before, {})


def test_review_records_the_signals_evals_report():
    before = judged(E)
    after, extra = review(before, Verdict.FULL, VERIFIED, [chunk("x", 0.41)])
    assert after.decision is A
    assert extra == {
        "claude_verdict": "full",
        "citations_total": 3,
        "citations_verified": 3,
        "citations_fully_cited": True,
        "retrieval_decision": "escalate",
        "retrieval_top_similarity": 0.41,
        "verdict_changed_decision": True,
    }
