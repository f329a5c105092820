"""Loaders: every kind of file, and every kind of bad input named in the refresh summary."""

from __future__ import annotations

import json

from knowledge.sources import (
    Document,
    document_from_json_record,
    html_to_document_parts,
    load_path,
    parse_sitemap,
    split_front_matter,
)

HTML = """<html><head><title>Refunds</title><link rel="canonical" href="https://help.example/refunds"></head>
<body><nav>Home | Pricing | Login</nav><main><h1>Refunds</h1><p>Intro text.</p>
<h2 id="partial">Partial refunds</h2><p>Enter the amount.</p></main><footer>(c) Example Inc</footer></body></html>"""


def write(path, content, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_front_matter_title_url_and_metadata(tmp_path):
    write(
        tmp_path / "a" / "refunds.md",
        "---\ntitle: Refund a payment\nurl: https://h.example/refunds\ntags: [x]\n---\n# Refund\nBody.",
    )
    load = load_path(str(tmp_path), 10_000)
    [doc] = load.documents
    assert (doc.doc_id, doc.title, doc.url) == ("a/refunds.md", "Refund a payment", "https://h.example/refunds")
    assert doc.metadata == {"tags": ["x"]}
    assert not load.failures


def test_html_keeps_article_drops_navigation_and_finds_anchors():
    title, canonical, body, anchors = html_to_document_parts(HTML)
    assert title == "Refunds" and canonical == "https://help.example/refunds"
    assert "Partial refunds" in body and "Home | Pricing" not in body and "Example Inc" not in body
    assert body.count("#") >= 2  # headings survive as Markdown for the chunker
    assert anchors == {"Partial refunds": "partial"}


def test_bad_files_are_named_and_the_rest_is_ingested(tmp_path):
    write(tmp_path / "good.md", "# Good\nUseful text about invoices.")
    write(tmp_path / "empty.md", "   \n")
    write(tmp_path / "binary.md", b"\x00\x01\x02PNG")
    write(tmp_path / "huge.txt", "word " * 300_000)
    write(tmp_path / "latin1.txt", "Caf\xe9 opening hours".encode("latin-1"))
    write(tmp_path / "broken.pdf", b"%PDF-1.4 this is not really a pdf")
    write(tmp_path / "image.png", b"\x89PNG")
    load = load_path(str(tmp_path), 1_000_000)
    ingested = {doc.doc_id for doc in load.documents}
    assert ingested == {"good.md", "latin1.txt"}
    reasons = {failure.item: failure.reason for failure in load.failures}
    assert "empty" in reasons["empty.md"]
    assert "binary" in reasons["binary.md"]
    assert "too large" in reasons["huge.txt"]
    assert "PDF" in reasons["broken.pdf"]
    assert any("latin1.txt" in w and "UTF-8" in w for w in load.warnings)
    assert any("image.png" in w and "unsupported" in w for w in load.warnings)
    assert "Café" in next(d for d in load.documents if d.doc_id == "latin1.txt").text
    # Failed files keep whatever the index had for them: a flaky read must not delete an article.
    assert load.protected_ids == {"empty.md", "binary.md", "huge.txt", "broken.pdf"}


def test_unreadable_file(tmp_path):
    import os

    path = write(tmp_path / "secret.md", "# x\ny")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything; make the read fail another way
            path.chmod(0o644)
            path.unlink()
            path.mkdir()  # a folder named like a file is skipped, not an error
            (tmp_path / "dangling.md").symlink_to(tmp_path / "nowhere.md")
        load = load_path(str(tmp_path), 10_000)
        assert any(f.item in {"secret.md", "dangling.md"} for f in load.failures), load.failures
    finally:
        if path.is_file():
            path.chmod(0o644)


def test_jsonl_export_bad_lines_duplicates_and_html(tmp_path):
    lines = [
        json.dumps({"id": "1", "title": "One", "url": "https://x/1", "text": "First article.", "locale": "en"}),
        "{not json",
        json.dumps({"id": "2", "html": HTML}),
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"id": "3", "text": ""}),
        json.dumps({"id": "1", "text": "duplicate"}),
        json.dumps(["a list"]),
    ]
    path = write(tmp_path / "export.jsonl", "\n".join(lines) + "\n")
    load = load_path(str(path), 10_000)
    docs = {doc.doc_id: doc for doc in load.documents}
    assert set(docs) == {"1", "2"}
    assert docs["1"].metadata == {"locale": "en"}
    assert docs["2"].url == "https://help.example/refunds" and docs["2"].title == "Refunds"
    items = " | ".join(str(f) for f in load.failures)
    assert "export.jsonl:2: bad JSON" in items
    assert "export.jsonl:4: missing 'id'" in items
    assert "export.jsonl:5 (id 3): empty document" in items
    assert "duplicate id" in items
    assert "export.jsonl:7: expected a JSON object" in items


def test_missing_source_is_incomplete_so_nothing_gets_deleted(tmp_path):
    load = load_path(str(tmp_path / "nope"), 10_000)
    assert not load.complete and "no such file" in load.failures[0].reason


def test_document_hash_changes_with_content():
    a = Document("id", "T", "u", "text", "s")
    assert a.content_hash == Document("id", "T", "u", "text", "s").content_hash
    assert a.content_hash != Document("id", "T", "u", "text!", "s").content_hash


def test_json_record_requires_text_or_html():
    import pytest

    from knowledge.sources import DocumentError

    with pytest.raises(DocumentError, match="text' or 'html"):
        document_from_json_record({"id": "x"}, "s")


def test_front_matter_errors():
    import pytest

    from knowledge.sources import DocumentError

    assert split_front_matter("no front matter") == ({}, "no front matter")
    with pytest.raises(DocumentError, match="YAML"):
        split_front_matter("---\nkey: [unclosed\n---\nbody")


def test_sitemap_and_sitemap_index():
    pages, nested = parse_sitemap(
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>https://a/1</loc></url></urlset>'
    )
    assert (pages, nested) == (["https://a/1"], [])
    pages, nested = parse_sitemap(
        '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>https://a/s.xml</loc></sitemap></sitemapindex>'
    )
    assert (pages, nested) == ([], ["https://a/s.xml"])
