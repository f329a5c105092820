"""The command line: fast help without heavy imports, and the knowledge commands end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "sentence_transformers", "lancedb", "transformers")


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout


def test_help_imports_no_heavy_library():
    for args in ([], ["search"], ["refresh"]):
        code = (
            "import sys\nfrom click.testing import CliRunner\nfrom bot.cli import main\n"
            f"result = CliRunner().invoke(main, {args + ['--help']!r})\n"
            "assert result.exit_code == 0, result.output\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
        )
        assert run_python(code).strip() == "", f"supportbot {' '.join(args)} --help imported heavy modules"


@pytest.mark.slow  # five CLI processes, each loading torch; the in-process tests cover the same functions
def test_refresh_search_status_json(tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "vat.md").write_text(
        "---\ntitle: VAT rates\nurl: https://h.example/vat\n---\nReverse charge applies to EU B2B invoices.",
        encoding="utf-8",
    )
    (folder / "bad.jsonl").write_text("{oops\n", encoding="utf-8")
    env = {**os.environ, "SUPPORTBOT_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-m", "bot.cli"]
    done = subprocess.run(
        [*cli, "refresh", "--source", str(folder), "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["totals"] == {"added": 1, "updated": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    assert any("bad.jsonl" in w for w in report["warnings"])  # .jsonl inside a folder is not a document type

    found = json.loads(
        subprocess.run(
            [*cli, "search", "reverse charge", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert found["hits"][0]["doc_id"] == "vat.md" and found["hits"][0]["url"] == "https://h.example/vat"
    assert set(found["hits"][0]) >= {
        "doc_id",
        "url",
        "title",
        "heading",
        "text",
        "score",
        "vector_similarity",
        "fts_score",
    }

    status = json.loads(
        subprocess.run([*cli, "status", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert (status["documents"], status["last_refresh"]["totals"]["added"]) == (1, 1)

    nothing = subprocess.run([*cli, "rollback"], env=env, capture_output=True, text=True)
    assert nothing.returncode == 1 and "nothing to roll back" in nothing.stderr


def test_search_before_refresh_is_a_clear_error(tmp_path):
    env = {**os.environ, "SUPPORTBOT_DATA_DIR": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "search", "x"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "run `supportbot refresh` first" in done.stderr
