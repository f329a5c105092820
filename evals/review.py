"""`supportbot evals review FILE`: a person accepts, edits or rejects candidate cases.

The frozen set is reviewed like code, so nothing enters it without a human decision. Accepted
cases get the set's next free id (`s056`) and keep their provenance (`interaction_id`, `origin`,
`created_at`, `topic`), which is also how the export knows not to offer them again; rejected
ones go to a ledger beside FILE for the same reason. Skipped ones stay in FILE for next time.
Prompts are click's, so a test drives the whole flow through stdin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from evals.cases import EvalCase, append_cases, load_cases, next_free_id, write_cases
from evals.export import rejected_path_for

# Fields that help the reviewer decide but do not belong in the frozen set.
REVIEW_ONLY = ("bot_answer", "confidence", "decision", "comments", "disagreement", "review")
CHOICES = {"a": "accept", "e": "edit", "r": "reject", "s": "skip", "q": "quit"}


@dataclass
class ReviewResult:
    accepted: list[EvalCase] = field(default_factory=list)
    rejected: list[EvalCase] = field(default_factory=list)
    remaining: int = 0

    def summary(self) -> str:
        return f"accepted {len(self.accepted)}, rejected {len(self.rejected)}, left for later {self.remaining}"


HISTORY_TEXT_CHARS = 300  # a long bot answer in the thread is cut for the terminal


def history_lines(case: EvalCase) -> list[str]:
    """The thread before a follow-up, one line per turn ("  thread 1 user: ..."), sources after a bot turn."""
    lines = []
    for number, turn in enumerate(case.history, start=1):
        text = " ".join(turn.text.split())
        text = text if len(text) <= HISTORY_TEXT_CHARS else text[: HISTORY_TEXT_CHARS - 1] + "…"
        lines.append(f"  thread {number} {turn.role}: {text}")
        if turn.sources:
            lines.append(f"           cited: {', '.join(turn.sources)}")
    return lines


def show(case: EvalCase, position: int, total: int) -> None:
    extra = case.model_extra or {}
    click.secho(f"\n[{position}/{total}] {case.id}  ({case.origin or 'unknown origin'})", bold=True)
    for turn in history_lines(case):
        click.echo(turn)
    click.echo(f"  {'follow-up' if case.history else 'question'}:{' ' if case.history else '   '}{case.question}")
    click.echo(f"  reference:  {case.reference_answer if case.reference_answer is not None else '(none)'}")
    click.echo(f"  gold:       {', '.join(case.gold_sources) or '(none)'}")
    click.echo(
        f"  answerable: {'yes' if case.answerable else 'no (knowledge gap)'}"
        + (f"  topic: {case.topic}" if case.topic else "")
    )
    if extra.get("bot_answer") and extra.get("bot_answer") != case.reference_answer:
        click.echo(f"  bot said:   {extra['bot_answer']}")
    for comment in extra.get("comments") or []:
        click.echo(f"  comment:    {comment}")


def edit(case: EvalCase) -> EvalCase:
    """Prompt for each field with the current value as default; '-' clears the reference."""
    question = click.prompt("question", default=case.question)
    reference = click.prompt("reference answer ('-' for none)", default=case.reference_answer or "-")
    answerable = click.confirm("answerable from the knowledge?", default=case.answerable)
    gold = click.prompt("gold sources (comma-separated, '-' for none)", default=", ".join(case.gold_sources) or "-")
    topic = click.prompt("topic ('-' for none)", default=case.topic or "-")
    return case.model_copy(
        update={
            "question": question.strip(),
            "reference_answer": None if reference.strip() == "-" else reference.strip(),
            "answerable": answerable,
            "gold_sources": [] if gold.strip() == "-" else [s.strip() for s in gold.split(",") if s.strip()],
            "topic": None if topic.strip() == "-" else topic.strip(),
        }
    )


def frozen_form(case: EvalCase, new_id: str) -> EvalCase:
    data = case.model_dump(exclude_none=True)
    for name in REVIEW_ONLY:
        data.pop(name, None)
    data["id"] = new_id
    return EvalCase.model_validate(data)


def decide(case: EvalCase, position: int, total: int) -> tuple[EvalCase, str]:
    """Prompt until a final action; edits loop back so the reviewer sees the result first."""
    while True:
        action = CHOICES[
            click.prompt("[a]ccept [e]dit [r]eject [s]kip [q]uit", type=click.Choice(list(CHOICES)), default="s")
        ]
        if action == "edit":
            case = edit(case)
            show(case, position, total)
        elif action == "accept" and case.answerable and not case.reference_answer:
            click.secho("an answerable case needs a reference answer: choose [e]dit", fg="yellow")
        else:
            return case, action


def review_file(candidates_path: Path, frozen_path: Path) -> ReviewResult:
    """Walk FILE's cases with prompts; write accepted ones to the frozen set, rejected to the ledger."""
    candidates = load_cases(candidates_path)
    frozen = load_cases(frozen_path) if frozen_path.exists() else []
    frozen_ids = [case.id for case in frozen]
    done = {case.interaction_id for case in frozen if case.interaction_id}
    result = ReviewResult()
    keep: list[EvalCase] = []
    pending = [case for case in candidates if case.interaction_id not in done]
    quitting = False
    for position, case in enumerate(pending, start=1):
        if quitting:
            keep.append(case)
            continue
        show(case, position, len(pending))
        case, action = decide(case, position, len(pending))
        if action == "accept":
            new_id = next_free_id(frozen_ids)
            frozen_ids.append(new_id)
            result.accepted.append(frozen_form(case, new_id))
            click.secho(f"accepted as {new_id}", fg="green")
        elif action == "reject":
            result.rejected.append(case.model_copy(update={"review": "rejected"}))
        else:
            keep.append(case)
            quitting = action == "quit"
    append_cases(frozen_path, result.accepted)
    append_cases(rejected_path_for(candidates_path), result.rejected)
    write_cases(candidates_path, keep)
    result.remaining = len(keep)
    return result
