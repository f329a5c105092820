"""Claude's own verdict + citation verification + retrieval confidence -> one Decision. Pure.

Why: the lexical confidence (`confidence.judge`) only sees the question's words and the retrieved
chunks, so it withholds a good, fully cited Claude answer whenever the question is worded unlike
the docs. Claude has read the sources; its answer contract (`claude.SYSTEM_PROMPT`) makes it end
with a verdict tag on whether they answer the question: `<verdict>full</verdict>`,
`<verdict>partial</verdict>` or `<verdict>none</verdict>`. A tag, not JSON: structured outputs
cannot be combined with citations, and a last-line tag leaves the cited answer text untouched.
The tag is parsed and stripped here (`split_tag`); while streaming, `claude.VerdictGate` keeps it
out of Slack.

The verdict alone is not trusted either. Every citation is checked: its `cited_text` must occur
(whitespace normalised) in the chunk text we sent (`verify_citations`). `combine`, called right
after `confidence.judge`, then decides, and its first reason names the signal that did:

- no verdict (the extractive answerer): the judgement, unchanged;
- verdict missing or malformed: the retrieval judgement decides (today's behaviour);
- `none` (or the NO_ANSWER sentinel): escalate;
- best retrieved chunk below `RETRIEVAL_FLOOR` (retrieval found essentially nothing): escalate,
  whatever Claude says;
- `full` and fully cited (at least one citation, all verified, >= `FULLY_CITED` of the text
  backed): answer, even when the lexical confidence would have escalated;
- `partial` and fully cited: answer with a caveat (the caveat says the docs cover only part);
- `full`/`partial` without verified full citation: the retrieval judgement decides, never above
  what Claude claims (`partial` caps it at a caveat);
- any citation not found in its source counts against the answer: the decision drops one step
  (answer -> caveat -> escalate), in every case but "no verdict".

The returned Judgement keeps the retrieval confidence: it is the calibrated score evals use for
thresholds and AUROC; the verdict and the verification go to `Answer.signals` (`signals`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from bot.engine.citations import Span
from bot.engine.confidence import Judgement
from bot.engine.types import Decision, RetrievedChunk

TAG_START = "<verdict"  # everything from here on is the tag (case-insensitive)
TAG_FIND = re.compile(re.escape(TAG_START), re.IGNORECASE)
TAG = re.compile(r"<verdict\s*>\s*([a-z][a-z ]*?)\s*(?:</verdict\s*>\s*|$)", re.IGNORECASE)

# Below this cosine similarity (all-MiniLM-L6-v2) between the query and the best retrieved chunk,
# retrieval found essentially nothing. Measured with `python benchmarks/verdict_floor.py
# ../shared/datasets/anthropic-docs` (benchmarks/RESULTS.md, "Claude's verdict"): the lowest
# answerable question scores 0.348 (sample.jsonl) and 0.423 (anthropic-docs holdout), off-topic
# questions at most 0.205 and 0.403; 0.30 is the highest round floor that escalates no answerable
# question of either set, 0.05 under the lowest, and it stops 100% / 80% of the off-topic ones.
# Claude's "full" is then overruled: its answer can only be padding around unrelated sources.
RETRIEVAL_FLOOR = 0.30
# "Fully cited": at least this share of the answer's characters sits in cited text. Not 1.0:
# Claude's connective words ("Here's how:") carry no citation; the substance must.
FULLY_CITED = 0.8


class Verdict(str, Enum):
    FULL = "full"
    PARTIAL = "partial"
    NONE = "none"
    MISSING = "missing"  # Claude wrote no tag
    MALFORMED = "malformed"  # a tag we cannot read: "<verdict>maybe</verdict>", "<verdict>full</verd"


WORDS = {
    "full": Verdict.FULL,
    "fully": Verdict.FULL,
    "yes": Verdict.FULL,
    "partial": Verdict.PARTIAL,
    "partly": Verdict.PARTIAL,
    "partially": Verdict.PARTIAL,
    "none": Verdict.NONE,
    "no": Verdict.NONE,
    "not at all": Verdict.NONE,
}
SAYS = {
    Verdict.FULL: "the sources fully answer it",
    Verdict.PARTIAL: "the sources only partly answer it",
    Verdict.NONE: "the sources don't answer it",
}
STEP_DOWN = {Decision.ANSWER: Decision.ANSWER_WITH_CAVEAT, Decision.ANSWER_WITH_CAVEAT: Decision.ESCALATE}
RANK = {Decision.ESCALATE: 0, Decision.ANSWER_WITH_CAVEAT: 1, Decision.ANSWER: 2}
WOULD = {
    Decision.ANSWER: "answered",
    Decision.ANSWER_WITH_CAVEAT: "answered with a caveat",
    Decision.ESCALATE: "escalated",
}


def tag_start(text: str) -> int:
    """Where the verdict tag starts in `text`, or -1."""
    match = TAG_FIND.search(text)
    return match.start() if match else -1


def parse_tag(tag: str) -> Verdict:
    """`<verdict>full</verdict>` (any case, spaces, closing tag optional at the very end) -> FULL."""
    if not tag:
        return Verdict.MISSING
    match = TAG.fullmatch(tag.strip())
    if match is None:
        return Verdict.MALFORMED
    return WORDS.get(" ".join(match.group(1).lower().split()), Verdict.MALFORMED)


def split_tag(text: str) -> tuple[str, Verdict]:
    """(the text without the tag and the whitespace before it, the verdict). The tag is cut from
    its first `<verdict` to the end, exactly what the streaming gate holds back."""
    start = tag_start(text)
    if start < 0:
        return text, Verdict.MISSING
    return text[:start].rstrip(), parse_tag(text[start:])


def normalise(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class CitationCheck:
    """Distinct (source, cited span) pairs Claude gave, how many we found in their sources, and
    the share of the answer text backed by a citation."""

    total: int = 0
    verified: int = 0
    coverage: float = 0.0

    @property
    def unverified(self) -> int:
        return self.total - self.verified

    @property
    def fully_cited(self) -> bool:
        return self.total > 0 and self.unverified == 0 and self.coverage >= FULLY_CITED

    def describe(self) -> str:
        if not self.total:
            return "the answer cites nothing"
        text = f"{self.verified}/{self.total} citations verified"
        if self.unverified:
            text += f" ({self.unverified} not found in {'its source' if self.unverified == 1 else 'their sources'})"
        if self.coverage < FULLY_CITED:
            text += f", only {self.coverage:.0%} of the answer cited"
        return text


def verify_citations(spans: Iterable[Span], sources: Sequence[str], coverage: float) -> CitationCheck:
    """A citation is verified when its `cited_text` (whitespace normalised, non-empty) occurs in
    the text of the search result it points at (the text blocks it spans, one after the other);
    one pointing at a result we did not send is not."""
    normalised = [normalise(text) for text in sources]
    seen = {(span.chunk, span.chunk if span.last is None else span.last, normalise(span.cited_text)) for span in spans}
    verified = sum(
        1  # a span across blocks is checked against those blocks' texts in a row
        for first, last, cited in seen
        if cited and 0 <= first <= last < len(normalised) and cited in " ".join(normalised[first : last + 1])
    )
    return CitationCheck(total=len(seen), verified=verified, coverage=round(coverage, 4))


def top_similarity(chunks: Sequence[RetrievedChunk]) -> float:
    """The best retrieved chunk's vector similarity to the query (0 when nothing was retrieved)."""
    return max((chunk.vector_similarity or 0.0 for chunk in chunks), default=0.0)


def combine(
    judgement: Judgement,
    verdict: Verdict | None,
    citations: CitationCheck,
    *,
    similarity: float,
    floor: float = RETRIEVAL_FLOOR,
) -> Judgement:
    """The decision from Claude's verdict, the citation check and the retrieval judgement (see the
    module docstring for the rules). The first reason names the deciding signal; the retrieval
    reasons follow."""
    if verdict is None:
        return judgement
    retrieval = f"retrieval confidence {judgement.confidence:.2f} would have {WOULD[judgement.decision]}"
    cited = citations.describe()
    if verdict in (Verdict.MISSING, Verdict.MALFORMED):
        decision = judgement.decision
        said = "gave no verdict" if verdict is Verdict.MISSING else "gave an unreadable verdict"
        lead = f"retrieval confidence {judgement.confidence:.2f} decided (Claude {said}); {cited}"
    elif verdict is Verdict.NONE:
        decision = Decision.ESCALATE
        lead = f"Claude: {SAYS[verdict]}; {retrieval}"
    elif similarity < floor:
        decision = Decision.ESCALATE
        lead = (
            f"retrieval found essentially nothing (best source similarity {similarity:.2f} is below "
            f"{floor:.2f}), so Claude's verdict '{verdict.value}' was overruled; {cited}"
        )
    elif citations.fully_cited:
        decision = Decision.ANSWER if verdict is Verdict.FULL else Decision.ANSWER_WITH_CAVEAT
        lead = f"Claude: {SAYS[verdict]}; {cited}; {retrieval}"
    else:
        cap = Decision.ANSWER if verdict is Verdict.FULL else Decision.ANSWER_WITH_CAVEAT
        decision = min(judgement.decision, cap, key=RANK.__getitem__)
        lead = f"retrieval confidence {judgement.confidence:.2f} decided: Claude says {SAYS[verdict]}, but {cited}"
    if citations.unverified and decision in STEP_DOWN:
        decision = STEP_DOWN[decision]
        lead += f"; an unverifiable citation lowered the decision to {WOULD[decision]}"
    return Judgement(judgement.confidence, decision, [lead, *judgement.reasons])


def review(
    judgement: Judgement, verdict: Verdict | None, citations: CitationCheck, chunks: Sequence[RetrievedChunk]
) -> tuple[Judgement, dict[str, Any]]:
    """`combine` for the pipeline: the final judgement and the signals to add to the Answer."""
    similarity = top_similarity(chunks)
    final = combine(judgement, verdict, citations, similarity=similarity)
    return final, signals(verdict, citations, judgement, final, similarity)


def signals(
    verdict: Verdict | None, citations: CitationCheck, before: Judgement, after: Judgement, similarity: float
) -> dict[str, Any]:
    """What evals report: the verdict, the citation check and what the retrieval alone decided."""
    if verdict is None:
        return {}
    return {
        "claude_verdict": verdict.value,
        "citations_total": citations.total,
        "citations_verified": citations.verified,
        "citations_fully_cited": citations.fully_cited,
        "retrieval_decision": before.decision.value,
        "retrieval_top_similarity": round(similarity, 4),
        "verdict_changed_decision": before.decision is not after.decision,
    }
