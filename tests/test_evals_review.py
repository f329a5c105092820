"""`supportbot evals review`: the terminal flow, driven through stdin."""

from __future__ import annotations

from click.testing import CliRunner

from bot.cli import main
from evals.cases import EvalCase, load_cases, write_cases
from evals.export import rejected_path_for


def candidate(n: int, **fields) -> EvalCase:
    data = {
        "id": f"fb-{n:03d}",
        "question": f"question {n}?",
        "reference_answer": f"answer {n}.",
        "gold_sources": [f"https://kb.example/{n}"],
        "answerable": True,
        "origin": "thumbs-up",
        "interaction_id": f"i{n}",
        "bot_answer": f"answer {n} [1].",
        "confidence": 0.7,
    }
    return EvalCase.model_validate(data | fields)


def test_accept_edit_reject_skip_and_quit(tmp_path):
    candidates, frozen = tmp_path / "candidates.jsonl", tmp_path / "frozen.jsonl"
    write_cases(
        frozen,
        [EvalCase(id="s001", question="old?", reference_answer="old.", gold_sources=["u"], origin="handwritten")],
    )
    write_cases(
        candidates,
        [
            candidate(1),
            candidate(2, reference_answer=None, origin="thumbs-down", comments=["wrong page"]),
            candidate(3),
            candidate(4),
            candidate(5),
            candidate(6),
        ],
    )
    keystrokes = (
        "\n".join(
            [
                "a",  # 1: accept as is
                "a",  # 2: no reference yet: refused...
                "e",  # ...so edit it:
                "question two, reworded?",  #    question
                "The right answer.",  #    reference
                "n",  #    answerable? no: a knowledge gap
                "-",  #    gold sources: none
                "payments",  #    topic
                "a",  #    then accept
                "r",  # 3: reject
                "",  # 4: Enter = skip
                "q",  # 5: quit (6 is kept without a prompt)
            ]
        )
        + "\n"
    )
    result = CliRunner().invoke(main, ["evals", "review", str(candidates), "--into", str(frozen)], input=keystrokes)
    assert result.exit_code == 0, result.output
    assert "accepted 2, rejected 1, left for later 3" in result.output
    assert "needs a reference answer" in result.output and "comment:    wrong page" in result.output

    frozen_cases = load_cases(frozen)
    assert [case.id for case in frozen_cases] == ["s001", "s002", "s003"]
    first, second = frozen_cases[1], frozen_cases[2]
    assert first.interaction_id == "i1" and first.origin == "thumbs-up" and first.reference_answer == "answer 1."
    assert "bot_answer" not in (first.model_extra or {}) and "confidence" not in (first.model_extra or {})
    assert second.question == "question two, reworded?" and second.reference_answer == "The right answer."
    assert not second.answerable and second.gold_sources == [] and second.topic == "payments"

    assert [case.id for case in load_cases(rejected_path_for(candidates))] == ["fb-003"]
    assert [case.id for case in load_cases(candidates)] == ["fb-004", "fb-005", "fb-006"]

    # Running again only shows what is left; cases already frozen are dropped from the file.
    write_cases(candidates, [candidate(1), *load_cases(candidates)])
    again = CliRunner().invoke(main, ["evals", "review", str(candidates), "--into", str(frozen)], input="r\nr\nr\n")
    assert "accepted 0, rejected 3, left for later 0" in again.output
    assert load_cases(candidates) == [] and len(load_cases(frozen)) == 3


def test_invalid_candidates_file_is_refused_with_line_numbers(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "question": "q"}\n{broken\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["evals", "review", str(path), "--into", str(tmp_path / "f.jsonl")])
    assert result.exit_code == 2 and "line 2" in result.output
