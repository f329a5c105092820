"""Chunking follows headings, carries context, and never exceeds the model's word-piece budget."""

from __future__ import annotations

import pytest

from knowledge.chunking import chunk_document, slugify, split_sections, wordpiece_counter
from knowledge.embeddings import resolve_model_path
from knowledge.sources import Document


@pytest.fixture(scope="module")
def count():
    return wordpiece_counter(resolve_model_path())


def doc(text, url="https://help.example/invoices", anchors=None):
    return Document("invoices.md", "Invoices", url, text, "src", anchors=anchors or {})


def test_sections_follow_headings_not_code_fences():
    sections = split_sections("# A\nx\n## B\ny\n```\n# not a heading\n```\n### C\nz\n## D\nw")
    assert [s.path for s in sections] == [[], ["A"], ["A", "B"], ["A", "B", "C"], ["A", "D"]]


def test_chunks_carry_title_heading_anchor_and_fit_the_model(count):
    long_section = " ".join(f"Sentence number {i} explains recurring invoice schedules in detail." for i in range(120))
    text = f"# Invoices\nIntro paragraph about invoices and what they are for in Tallybook.\n\n## Recurring invoices\n{long_section}\n\n## Reminders\nSend reminders 3 days before the due date, on the due date, and 7 days after."
    chunks = chunk_document(doc(text), count, max_tokens=120, overlap_tokens=24)
    assert len(chunks) > 4
    for chunk in chunks:
        assert count(chunk.embed_text) <= 120 + 2, chunk.embed_text  # +2: the join characters
        assert chunk.embed_text.startswith("Invoices")
    recurring = [c for c in chunks if c.heading == "Recurring invoices"]
    assert len(recurring) > 2 and all(c.url.endswith("#recurring-invoices") for c in recurring)
    # Overlap: each continuation starts with the end of the previous chunk.
    assert recurring[1].text.split("\n\n")[0] in recurring[0].text
    reminders = [c for c in chunks if c.heading == "Reminders"]
    assert reminders and "7 days after" in reminders[0].text
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_html_anchor_ids_win_over_slugs(count):
    chunks = chunk_document(
        doc(
            "## Partial refunds\nEnter the amount to refund, then confirm." * 3, anchors={"Partial refunds": "partial"}
        ),
        count,
    )
    assert chunks[0].url == "https://help.example/invoices#partial"


def test_urls_that_already_point_into_a_page_keep_their_anchor(count):
    chunks = chunk_document(
        doc("## Sub\nText here long enough to be a section of its own, really.", url="https://d.example/p#sec"), count
    )
    assert all(c.url == "https://d.example/p#sec" for c in chunks)


def test_tiny_sections_merge_forward(count):
    text = "## Step one\nClick Save.\n## Step two\nThen open Settings, choose Billing, and pick the payment method you want to use for renewals."
    chunks = chunk_document(doc(text), count)
    assert len(chunks) == 1 and "Click Save." in chunks[0].text and "Step two" in chunks[0].text


def test_run_on_text_is_split_by_words(count):
    chunks = chunk_document(doc("x" * 10 + " " + "token " * 2000), count, max_tokens=100, overlap_tokens=0)
    assert len(chunks) > 10 and all(count(c.embed_text) <= 102 for c in chunks)


def test_slugify():
    assert slugify("Refunds & credit notes (2024)") == "refunds--credit-notes-2024"
