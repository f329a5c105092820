"""The eval case contract (ARCHITECTURE.md, "Contracts") as a pydantic model, and its JSONL I/O.

A case file is reviewed in git, so a broken line must never vanish quietly: `parse_cases`
returns every invalid line with its number, and `load_cases` refuses a file that has any.
Provenance fields (`origin`, `created_at`, `interaction_id`, `topic`) are optional so that
third-party sets with only the contract's five fields load as they are; unknown fields are
kept, so reading and rewriting a file never loses data.

A follow-up in a thread is a case with a `history`: the earlier turns of the thread, oldest first.
Assistant turns are optional (the runner replays missing ones through the bot, as the thread would
have them); an assistant turn may name the `sources` it cited. `followup_kind` labels what sort of
follow-up it is (pronoun, ellipsis, topic_shift, ...), so scores can be reported per kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

FEEDBACK_ID_PREFIX = "fb-"


class HistoryTurn(BaseModel):
    """One earlier message of the thread; `sources` are the urls an assistant turn cited."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    text: str = Field(min_length=1)
    sources: list[str] = Field(default_factory=list)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class EvalCase(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    reference_answer: str | None = None
    gold_sources: list[str] = Field(default_factory=list)
    answerable: bool = True
    origin: str | None = None  # "handwritten", "thumbs-up", "human-resolution", ...
    created_at: datetime | None = None
    interaction_id: str | None = None
    topic: str | None = None
    history: list[HistoryTurn] = Field(default_factory=list)  # earlier turns of the thread, oldest first
    followup_kind: str | None = None  # pronoun, ellipsis, topic_shift, clarification, same_article, unanswerable

    @property
    def is_followup(self) -> bool:
        return any(turn.role == "user" for turn in self.history)

    @field_validator("id", "question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("gold_sources")
    @classmethod
    def _sources_not_blank(cls, value: list[str]) -> list[str]:
        if any(not source.strip() for source in value):
            raise ValueError("gold sources must be non-empty strings")
        return [source.strip() for source in value]

    def to_json_line(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        if not data.get("history"):  # single-turn cases keep the contract's shape
            data.pop("history", None)
        for turn in data.get("history", []):
            if not turn.get("sources"):
                turn.pop("sources", None)
        return json.dumps(data, ensure_ascii=False)


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class InvalidCases(ValueError):
    """A case file has invalid lines; `errors` names each one with its line number."""

    def __init__(self, path: Path | str, errors: list[LineError]) -> None:
        self.path = Path(path)
        self.errors = errors
        shown = "\n".join(f"  {error}" for error in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{path}: {len(errors)} invalid line(s)\n{shown}{more}")


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'case'}: {error['msg']}" for error in exc.errors()
    )


def parse_cases(lines: Iterable[str]) -> tuple[list[EvalCase], list[LineError]]:
    """Valid cases and the errors of every other non-blank line (1-based line numbers).

    A repeated id is an error on its later line: scores are reported per id.
    """
    cases: list[EvalCase] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(record, dict):
            errors.append(LineError(number, f"expected a JSON object, got {type(record).__name__}"))
            continue
        try:
            case = EvalCase.model_validate(record)
        except ValidationError as exc:
            errors.append(LineError(number, describe_validation_error(exc)))
            continue
        if case.id in seen:
            errors.append(LineError(number, f"duplicate id {case.id!r} (first on line {seen[case.id]})"))
            continue
        seen[case.id] = number
        cases.append(case)
    return cases, errors


def read_cases(path: Path | str) -> tuple[list[EvalCase], list[LineError]]:
    """Cases and line errors of a JSONL file; a missing file is an empty set."""
    path = Path(path)
    if not path.exists():
        return [], []
    return parse_cases(path.read_text(encoding="utf-8").splitlines())


def load_cases(path: Path | str) -> list[EvalCase]:
    """All cases of a file, or `InvalidCases` listing every bad line; a missing file is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no eval dataset at {path}")
    cases, errors = read_cases(path)
    if errors:
        raise InvalidCases(path, errors)
    return cases


def write_cases(path: Path | str, cases: Iterable[EvalCase]) -> None:
    """Replace the file atomically, so an interrupted write never leaves half a dataset."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(case.to_json_line() + "\n" for case in cases)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def append_cases(path: Path | str, cases: Iterable[EvalCase]) -> int:
    """Append to a case file (created when missing); returns how many were written."""
    lines = [case.to_json_line() + "\n" for case in cases]
    if not lines:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as out:
        out.write(("\n" if needs_newline else "") + "".join(lines))
    return len(lines)


def case_id_for_interaction(interaction_id: str) -> str:
    """A stable case id from an interaction id, so exporting twice yields the same id."""
    return FEEDBACK_ID_PREFIX + hashlib.sha256(interaction_id.encode("utf-8")).hexdigest()[:12]


def next_free_id(existing: Iterable[str], prefix: str | None = None) -> str:
    """The next id in a numbered set (`s055` -> `s056`), keeping the set's prefix and width."""
    numbered = [match for match in (re.fullmatch(r"([A-Za-z_-]*)(\d+)", value) for value in existing) if match]
    if prefix is None:
        prefixes = [match.group(1) for match in numbered]
        prefix = max(set(prefixes), key=prefixes.count) if prefixes else "c"
    same = [match for match in numbered if match.group(1) == prefix]
    width = max((len(match.group(2)) for match in same), default=3)
    number = max((int(match.group(2)) for match in same), default=0) + 1
    return f"{prefix}{number:0{width}d}"
