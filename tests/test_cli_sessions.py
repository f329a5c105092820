"""`supportbot ask`, `supportbot chat` (stdin driven) and the demo, run as the user runs them: subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Each command is a fresh process that loads torch and the embedding model; the first test also builds the sample index.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CLI = [sys.executable, "-m", "bot.cli"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_ask_answers_with_sources_as_text_and_json(sample_data_dir):
    question = "How long after a payment can we still refund it to the customer's card?"
    done = subprocess.run(
        [*CLI, "ask", question, "--json", "--data-dir", str(sample_data_dir)],
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["decision"] in ("answer", "answer_with_caveat") and answer["generator"] == "extractive"
    assert "180 days" in answer["text"] and any("refund" in c["url"] for c in answer["citations"])

    unanswerable = subprocess.run(
        [*CLI, "ask", "Is there a native HubSpot integration that syncs deals?", "--data-dir", str(sample_data_dir)],
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert unanswerable.returncode == 0, unanswerable.stderr
    assert "Decision: escalate to a human" in unanswerable.stdout


def test_chat_reads_questions_from_stdin_until_exit(sample_data_dir):
    stdin = (
        "How long after a payment can we still refund it to the customer's card?\n\n"
        "how many times is a webhook retried?\nexit\nnever asked\n"
    )
    done = subprocess.run(
        [*CLI, "chat", "--data-dir", str(sample_data_dir)],
        input=stdin,
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    answers = done.stdout.split("bot> ")[1:]
    assert len(answers) == 2, done.stdout  # the blank line is skipped, `exit` ends it, the last line is never read
    assert "180 days" in answers[0] and "Sources:" in answers[0]
    assert "webhook" in answers[1].lower() and "Sources:" in answers[1]

    eof = subprocess.run(
        [*CLI, "chat", "--data-dir", str(sample_data_dir)],
        input="",
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert eof.returncode == 0 and "bot> " not in eof.stdout  # Ctrl-D at the prompt ends the session quietly


def test_demo_indexes_answers_and_escalates(sample_data_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(sample_data_dir / "index", data_dir / "index")  # the demo's refresh then finds nothing new
    done = subprocess.run(
        [sys.executable, "-m", "bot.demo", "--data-dir", str(data_dir)],
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1. Indexing examples/knowledge" in out and "failed 0" in out
    assert out.count("Sources:") >= 3 and "180 days" in out
    assert "→ Escalated to a human" in out and "Answers by: offline extractive answerer" in out
