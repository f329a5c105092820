"""The eval case contract: validation, JSONL round trips, line-numbered errors, stable ids."""

from __future__ import annotations

import json

import pytest

from evals.cases import (
    EvalCase,
    InvalidCases,
    append_cases,
    case_id_for_interaction,
    load_cases,
    next_free_id,
    parse_cases,
    read_cases,
    write_cases,
)
from tests.conftest import SAMPLE_EVALS


def test_the_frozen_sample_set_is_valid():
    cases = load_cases(SAMPLE_EVALS)
    assert len(cases) == 55 and len({case.id for case in cases}) == 55
    assert sum(case.answerable for case in cases) == 40
    assert all(case.gold_sources for case in cases if case.answerable)
    assert all(case.origin == "handwritten" for case in cases)


def test_invalid_lines_are_reported_with_their_line_numbers(tmp_path):
    lines = [
        json.dumps({"id": "a", "question": "ok?", "gold_sources": ["u"], "answerable": True}),
        "{not json",
        "",
        json.dumps({"id": "b", "question": "   "}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "a", "question": "again"}),
        json.dumps({"id": "c", "question": "q", "answerable": "sometimes"}),
        json.dumps({"id": "d", "question": "q", "gold_sources": [""]}),
    ]
    cases, errors = parse_cases(lines)
    assert [case.id for case in cases] == ["a"]
    assert [error.line for error in errors] == [2, 4, 5, 6, 7, 8]
    assert "not valid JSON" in errors[0].message and "question" in errors[1].message
    assert "duplicate id 'a' (first on line 1)" in errors[3].message and "answerable" in errors[4].message

    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(InvalidCases) as caught:
        load_cases(path)
    assert len(caught.value.errors) == 6 and "line 2:" in str(caught.value) and "line 8:" in str(caught.value)
    with pytest.raises(FileNotFoundError):
        load_cases(tmp_path / "missing.jsonl")
    assert read_cases(tmp_path / "missing.jsonl") == ([], [])


def test_round_trip_keeps_provenance_and_unknown_fields(tmp_path):
    case = EvalCase(
        id="fb-1",
        question="How?",
        reference_answer="Like this.",
        gold_sources=["https://kb/a"],
        answerable=True,
        origin="thumbs-up",
        created_at="2025-01-02T03:04:05+00:00",
        interaction_id="i1",
        topic="payments",
        bot_answer="Like this [1].",
    )
    path = tmp_path / "cases.jsonl"
    write_cases(path, [case])
    assert append_cases(path, [case.model_copy(update={"id": "fb-2"})]) == 1
    again = load_cases(path)
    assert [c.id for c in again] == ["fb-1", "fb-2"]
    assert again[0].created_at.year == 2025 and again[0].topic == "payments"
    assert again[0].model_extra == {"bot_answer": "Like this [1]."}
    assert "null" not in path.read_text()  # unset optional fields are left out, not written as null


def test_third_party_sets_with_only_the_contract_fields_load():
    line = '{"id": "x", "question": "q", "reference_answer": null, "gold_sources": [], "answerable": false}'
    cases, errors = parse_cases([line])
    assert not errors and cases[0].origin is None and not cases[0].answerable


def test_ids():
    assert case_id_for_interaction("abc") == case_id_for_interaction("abc") != case_id_for_interaction("abd")
    assert case_id_for_interaction("abc").startswith("fb-")
    assert next_free_id(["s001", "s055", "fb-123abc"]) == "s056"
    assert next_free_id([]) == "c001"
