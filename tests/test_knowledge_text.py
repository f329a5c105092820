"""The shared text helpers: one definition each, used by the chunker, the answerers, the stores and the evals."""

from __future__ import annotations

import ast
from pathlib import Path

from knowledge.text import (
    FENCE,
    FUNCTION_WORDS,
    STOPWORDS,
    split_answer_sentences,
    split_sentences,
    sql_string,
    strip_markers,
    truncate,
)

ROOT = Path(__file__).resolve().parents[1]


def test_sentences_split_at_ends_not_abbreviations():
    assert split_sentences("Open it, e.g. from Settings. Then click “Save”. *Done* now! 3.5 days") == [
        "Open it, e.g. from Settings.",
        "Then click “Save”.",
        "*Done* now!",
        "3.5 days",
    ]
    assert split_answer_sentences("Refunds take 5 days.[1] Fees stay. [2]\nNext line") == [
        "Refunds take 5 days.[1]",
        "Fees stay. [2]",
        "Next line",
    ]


def test_markers_fences_truncate_and_sql():
    assert strip_markers("Click Refund [1]. Within 180 days [2, 3].") == "Click Refund . Within 180 days ."
    assert strip_markers("Click Refund [1].\n\nWithin  days [2].", tidy=True) == "Click Refund. Within days."
    assert FENCE.match("  ```python") and FENCE.match("~~~") and not FENCE.match("text ```")
    assert truncate("short", 10) == "short"
    assert truncate("a long sentence here", 10) == "a long se…" and len(truncate("x" * 50, 10)) == 10
    assert truncate("abcdefghi jklmnop", 10, ellipsis="", at_word=True) == "abcdefghi"  # a space in the last tenth
    assert truncate("a long sentence here", 10, ellipsis="", at_word=True) == "a long sen"  # none there: a hard cut
    assert sql_string("it's") == "'it''s'" and sql_string("x' OR '1'='1") == "'x'' OR ''1''=''1'"
    assert FUNCTION_WORDS <= STOPWORDS  # token F1's list is the narrow subset of the engine's


def test_no_module_defines_the_shared_helpers_again():
    """Each helper has one home: a second definition anywhere in bot/, evals/ or knowledge/ fails here."""
    shared = {"split_sentences", "strip_markers", "sql_string", "truncate", "FENCE", "STOPWORDS", "SENTENCE_END"}
    found = []
    for path in [*ROOT.glob("bot/**/*.py"), *ROOT.glob("evals/**/*.py"), *ROOT.glob("knowledge/**/*.py")]:
        if path.name == "text.py" and path.parent.name == "knowledge":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.name]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                else [target.id for target in getattr(node, "targets", []) if isinstance(target, ast.Name)]
            )
            found += [f"{path.relative_to(ROOT)}: {name}" for name in names if name in shared]
    assert found == [] or found == ["evals/metrics.py: strip_markers"], found  # that one wraps the shared one (tidy)
