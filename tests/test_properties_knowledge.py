"""Property tests for the loaders and the chunker: inputs nobody thought to write by hand.

A help center is edited by many people and exported by many tools, so a refresh must survive any
file (one bad item is a named failure, never a crash) and every chunk must fit the embedding
model. Examples are derandomized so CI is reproducible; raise `max_examples` locally to explore.

Bugs these properties found (a NUL byte in a JSONL export, a bad YAML date, overlap or a long
URL overflowing the chunk budget) stay pinned as `@example`s.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from knowledge.chunking import chunk_document, wordpiece_counter
from knowledge.embeddings import resolve_model_path
from knowledge.sources import Document, DocumentError, document_from_json_record, load_path

PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
MAX_BYTES = 200_000
COUNT = wordpiece_counter(resolve_model_path())
MIN_BODY_TOKENS = 32  # the chunker keeps at least this much room for text under a huge heading

# --------------------------------------------------------------------------- strategies

WORDS = st.one_of(
    st.sampled_from("invoice refund the a to Click Save. settings, (billing) 3 days $12.50 don't naïve 請求書".split()),
    st.text(string.ascii_letters + string.digits + string.punctuation + "éü—", min_size=1, max_size=12),
)
# URLs, base64, tables without spaces: one "word" that is many word pieces.
LONG_WORDS = st.text(string.ascii_letters + "/:.?=&%-_", min_size=40, max_size=300)


@st.composite
def markdown(draw) -> str:
    """Headings, paragraphs, lists, code fences and blank lines, in any order."""
    blocks = []
    for _ in range(draw(st.integers(0, 14))):
        words = draw(st.lists(st.one_of(WORDS, WORDS, WORDS, LONG_WORDS), min_size=1, max_size=120))
        kind = draw(st.sampled_from(["heading", "paragraph", "paragraph", "list", "fence", "blank"]))
        if kind == "heading":
            blocks.append("#" * draw(st.integers(1, 7)) + " " + " ".join(words[:12]))
        elif kind == "list":
            blocks.append("\n".join(f"- {word}" for word in words[:10]))
        elif kind == "fence":
            blocks.append("```\n# not a heading\n" + " ".join(words) + "\n```")
        elif kind == "blank":
            blocks.append("\n" * draw(st.integers(1, 3)))
        else:
            blocks.append(" ".join(words))
    return draw(st.sampled_from(["\n\n", "\n"])).join(blocks)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
JSON_RECORDS = st.dictionaries(
    st.sampled_from(["id", "title", "url", "text", "html"]) | st.text(max_size=10),
    st.one_of(JSON_VALUES, markdown(), st.just("<h1 id='x'>T</h1><main><p>body</p></main>")),
    max_size=6,
)
YAML_VALUES = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\d{4}-\d{1,2}-\d{1,2}", fullmatch=True),
    st.sampled_from(["[", "{a", "- x"]),
)
FRONT_MATTER = st.builds(
    lambda meta, body: "---\n" + "\n".join(f"{k}: {v}" for k, v in meta.items()) + f"\n---\n{body}",
    st.dictionaries(
        st.sampled_from(["id", "title", "url", "date", "tags"]) | st.text(max_size=8), YAML_VALUES, max_size=4
    ),
    markdown(),
)
FILE_BYTES = st.one_of(
    st.binary(max_size=3000),
    st.text(max_size=3000).map(str.encode),
    markdown().map(str.encode),
    FRONT_MATTER.map(str.encode),
    st.binary(max_size=600).map(lambda body: b"%PDF-1.4\n" + body + b"\n%%EOF\n"),
    st.lists(JSON_RECORDS | JSON_VALUES, max_size=6).map(lambda rows: "\n".join(map(json.dumps, rows)).encode()),
)
SUFFIXES = [".md", ".txt", ".html", ".pdf", ".jsonl", ".docx"]

# --------------------------------------------------------------------------- loaders


@PROPERTIES
@given(data=FILE_BYTES, suffix=st.sampled_from(SUFFIXES))
@example(data=b'{"id": "1", "text": "ok"}\n\x00', suffix=".jsonl")
@example(data=b"---\ndate: 2024-13-01\n---\nBody", suffix=".md")
def test_any_file_yields_documents_or_named_failures(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"article{suffix}"
        path.write_bytes(data)
        for spec in (str(path), folder):
            load = load_path(spec, MAX_BYTES)
            assert all(failure.item and failure.reason for failure in load.failures)
            assert all(doc.doc_id and doc.text.strip() for doc in load.documents)
            if suffix == ".docx" or (suffix == ".jsonl" and spec == folder):
                assert not load.documents and not load.failures and load.warnings  # skipped, and said so
            elif suffix != ".jsonl":
                assert len(load.documents) + len(load.failures) == 1  # one file, one outcome
                assert all(failure.item == path.name for failure in load.failures)


@PROPERTIES
@given(record=JSON_RECORDS | JSON_VALUES)
def test_any_json_record_is_a_document_or_a_document_error(record: object) -> None:
    try:
        doc = document_from_json_record(record, "export.jsonl")
    except DocumentError:
        return
    assert isinstance(doc, Document)
    assert doc.doc_id.strip() and isinstance(doc.text, str) and isinstance(doc.title, str)
    assert isinstance(doc.url, str) and doc.url


# --------------------------------------------------------------------------- chunker

CHUNK_INPUTS = dict(
    text=markdown(),
    title=st.text(string.ascii_letters + " ", max_size=60),
    max_tokens=st.integers(64, 256),
    overlap=st.integers(0, 48),
)


@PROPERTIES
@given(**CHUNK_INPUTS)
@example(text="\n\n".join(["word " * 170, "tail " * 20, "big " * 190]), title="T", max_tokens=200, overlap=32)
@example(text="see " + "a/" * 150, title="T", max_tokens=200, overlap=0)
def test_chunks_never_exceed_the_token_budget(text: str, title: str, max_tokens: int, overlap: int) -> None:
    doc = Document(doc_id="d", title=title, url="https://help.example/d", text=text, source="s")
    for chunk in chunk_document(doc, COUNT, max_tokens=max_tokens, overlap_tokens=overlap):
        context_tokens = COUNT(" > ".join(filter(None, (chunk.title, chunk.heading))))
        if context_tokens + 2 + MIN_BODY_TOKENS <= max_tokens:
            assert COUNT(chunk.embed_text) <= max_tokens
        else:  # a heading longer than the budget: only the body's floor is promised
            assert COUNT(chunk.text) <= MIN_BODY_TOKENS


@PROPERTIES
@given(**CHUNK_INPUTS)
def test_every_chunk_comes_from_the_document(text: str, title: str, max_tokens: int, overlap: int) -> None:
    doc = Document(doc_id="d", title=title, url="https://help.example/d", text=text, source="s")
    chunks = chunk_document(doc, COUNT, max_tokens=max_tokens, overlap_tokens=overlap)
    for chunk in chunks:
        assert chunk.text.strip() and chunk.doc_id == "d" and chunk.title == title
        assert all(word in text for word in chunk.text.split()), chunk.text
        assert all(part in text for part in chunk.heading.split(" > ") if part)
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    if text.strip() and not chunks:
        assert all(line.lstrip().startswith(("#", "`")) or not line.strip() for line in text.splitlines())
