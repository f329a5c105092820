"""The offline answerer is faithful by construction: every sentence cited, every citation verbatim."""

from __future__ import annotations

import json
import re

import pytest

from bot.engine.extractive import ExtractiveAnswerer, is_scraped_menu, units
from bot.engine.pipeline import Pipeline
from bot.engine.types import Question
from tests.conftest import SAMPLE_EVALS

MARKERS = re.compile(r"(?:\[\d+\])+")


def answer_pieces(text: str) -> list[str]:
    """The answer cut at its marker groups: every piece before a marker is one cited sentence."""
    pieces = MARKERS.split(text)
    assert pieces[-1].strip() == "", f"text after the last marker is uncited: {pieces[-1]!r}"
    return [piece.strip() for piece in pieces[:-1]]


async def test_every_sentence_is_cited_and_every_citation_is_verbatim(sample_settings, sample_searcher):
    """Faithfulness 1.0 over every answerable question of the sample eval set."""
    pipeline = Pipeline(sample_settings, sample_searcher)
    cases = [json.loads(line) for line in SAMPLE_EVALS.read_text().splitlines() if line.strip()]
    answerable = [case for case in cases if case["answerable"]]
    assert len(answerable) >= 40
    for case in answerable:
        answer = await pipeline.answer(Question(text=case["question"]))
        chunks = {chunk.chunk_id: chunk for chunk in answer.retrieved}
        assert answer.generator == "extractive"
        for citation in answer.citations:
            chunk = chunks[citation.chunk_id]
            assert citation.cited_text in chunk.text, (case["id"], citation.cited_text)
            assert (citation.url, citation.doc_id) == (chunk.url, chunk.doc_id)
        pieces = answer_pieces(answer.text)
        assert 2 <= len(pieces) <= 4, (case["id"], answer.text)
        cited = {citation.cited_text for citation in answer.citations}
        assert all(piece in cited for piece in pieces), (case["id"], pieces)


def test_units_are_verbatim_and_keep_lists_and_table_headers():
    text = (
        "Refunds go back to the original card. Partial refunds are allowed.\n\n"
        "ACH only appears when all of the following are true:\n\n"
        "* The account is on Starter or higher.\n  * The invoice is in US dollars.\n\n"
        "| Payment method | Refund possible within |\n|---|---|\n| Card | 180 days of the payment |\n\n"
        "Nothing follows this lead-in:"
    )
    found = units(text)
    assert all(unit.text in text for unit in found)
    texts = [unit.text for unit in found]
    assert texts[:2] == ["Refunds go back to the original card.", "Partial refunds are allowed."]
    assert texts[2].startswith("ACH only appears") and texts[2].endswith("The invoice is in US dollars.")
    row = next(unit for unit in found if unit.text.startswith("Card"))
    assert row.text == "Card | 180 days of the payment" and "Refund possible within" in row.context
    assert not any("Payment method" in t or t.endswith("lead-in:") for t in texts)


@pytest.mark.parametrize(
    "text, menu",
    [
        ("Why chain prompts?When to chain promptsHow to chain promptsExample chained workflows", True),
        ("Specify the desired output formatPrefill Claude’s responseConstrain with examplesUse retrieval", True),
        ("Prompt libraryGet inspired by prompts for many use cases.GitHub prompting tutorialAn example", True),
        ("We sync invoices with QuickBooks, PowerPoint and SharePoint.", False),  # brands start with a capital
        ('aws bedrock list-foundation-models --query "modelSummaries[*].modelId"', False),  # code
        ("Call client.messages.create with maxTokens set.", False),
        ("Refunds take five business days to reach the card.", False),
    ],
)
def test_scraped_menus_are_not_quoted(text, menu):
    assert is_scraped_menu(text) is menu
    assert any(unit.text == text for unit in units(text)) is (not menu)


@pytest.mark.parametrize("chunks", [[]])
async def test_no_chunks_means_an_honest_cannot_answer(chunks):
    draft = await ExtractiveAnswerer().generate(Question(text="anything?"), "anything?", chunks)
    assert draft.cannot_answer and draft.citations == [] and draft.text
