"""The house's shape, checked on the source: which room may import which (issue 16).

`knowledge/` is the bottom and imports nothing of `bot/`; `bot/engine` never imports `bot/slack`;
`evals/` may use the engine but never `bot/slack`, and `bot/slack` never imports `evals/` (the CLI
builds the weekly scheduler and hands it to `serve`). Inside `bot/slack`, `app.py` and
`listeners.py` share the bot's state through `state.py`, not through each other.
Imports inside functions and under TYPE_CHECKING count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(source: str, module: str) -> set[str]:
    """Every module a source file imports (absolute names; relative imports resolved against `module`)."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from bot.slack import app`
    return found


def modules_under(folder: str) -> dict[str, set[str]]:
    """module name -> what it imports, for every .py file under `folder`."""
    result = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        result[module] = imported_modules(path.read_text(encoding="utf-8"), module)
    return result


def violations(folder: str, forbidden: str) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in modules_under(folder).items()
        for name in names
        if name == forbidden or name.startswith(forbidden + ".")
    )


def test_the_scanner_sees_every_kind_of_import():
    source = (
        "import evals.weekly\nfrom bot.slack import app\nfrom .listeners import Listeners\n"
        "def f():\n    from evals.weekly import WeeklyScheduler\n"
        "if TYPE_CHECKING:\n    from bot.slack.state import SupportBot\n"
    )
    found = imported_modules(source, "bot.slack.app")
    assert {"evals.weekly", "bot.slack.app", "bot.slack.listeners", "bot.slack.state"} <= found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("bot/slack", "evals"),
        ("evals", "bot.slack"),
        ("knowledge", "bot"),
        ("knowledge", "evals"),
        ("bot/engine", "bot.slack"),
        ("bot/engine", "evals"),
    ],
)
def test_rooms_do_not_import_upwards(folder, forbidden):
    assert violations(folder, forbidden) == []


def test_app_and_listeners_do_not_import_each_other():
    modules = modules_under("bot/slack")
    assert not {"bot.slack.app"} & modules["bot.slack.listeners"]
    assert not {"bot.slack.listeners"} & {name for name in modules["bot.slack.state"]}
    assert "bot.slack.listeners" in modules["bot.slack.app"]  # the app registers them: the one direction
