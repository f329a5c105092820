"""`supportbot`: the command line. Each command is a thin shell over a public function.

Heavy libraries (torch, sentence-transformers, lancedb) are imported inside the commands that
need them, so `supportbot --help` answers at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from bot.settings import Settings


def load_settings(data_dir: Path | None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = 1) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Where the index and logs live (default: SUPPORTBOT_DATA_DIR or ./data).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="supportbot")
def main() -> None:
    """supportbot: answers support questions in Slack from your knowledge, with sources.

    Start with `supportbot refresh` to index the knowledge, then `supportbot ask "..."`.
    """


# --------------------------------------------------------------------------- knowledge


@main.command()
@click.option("--source", "sources", multiple=True, metavar="PATH_OR_URL",
              help="A folder, file, JSONL export, page URL or sitemap.xml URL (repeatable). "
                   "Default: SUPPORTBOT_SOURCES.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal, for long runs).")
@data_dir_option
@json_option
def refresh(sources: tuple[str, ...], progress: bool | None, data_dir: Path | None, as_json: bool) -> None:
    """Index new and changed documents, drop vanished ones; unchanged documents are not re-embedded."""
    from knowledge.index import KnowledgeIndex, RefreshInProgress

    settings = load_settings(data_dir)
    specs = list(sources) or settings.sources
    if not specs:
        fail("no sources: pass --source or set SUPPORTBOT_SOURCES")
    index = KnowledgeIndex.from_settings(settings)
    try:
        report = asyncio.run(index.refresh(specs, show_progress=progress))
    except RefreshInProgress as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the index in {settings.index_dir}: {exc.strerror or exc}")
    if as_json:
        print_json(report.to_dict())
    else:
        for warning in report.warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        for failure in report.failures:
            click.secho(f"failed: {failure}", fg="red", err=True)
        for counts in report.sources:
            click.echo(
                f"{counts.source}: added {counts.added}, updated {counts.updated}, unchanged {counts.unchanged}, "
                f"deleted {counts.deleted}, failed {counts.failed}"
            )
        click.echo(f"refresh done: {report.summary}")


@main.command()
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="How many documents.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "fts"]), default="hybrid", show_default=True)
@click.option("--per-doc", default=1, show_default=True, help="Chunks shown per document.")
@data_dir_option
@json_option
def search(query: str, k: int, mode: str, per_doc: int, data_dir: Path | None, as_json: bool) -> None:
    """Ranked chunks for QUERY with document id, url and score."""
    from knowledge.index import IndexNotReady, KnowledgeIndex
    from knowledge.search import Searcher

    settings = load_settings(data_dir)
    index = KnowledgeIndex.from_settings(settings)
    try:
        result = Searcher.from_settings(settings, index).search(query, k, mode=mode, per_doc=per_doc)
    except IndexNotReady as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_dict())
        return
    if not result.hits:
        click.echo("no results")
    for number, hit in enumerate(result.hits, start=1):
        where = f" > {hit.heading}" if hit.heading else ""
        click.secho(f"{number}. {hit.title}{where}  (score {hit.score:.3f})", bold=True)
        click.echo(f"   {hit.url}  [{hit.doc_id}]")
        snippet = " ".join(hit.text.split())
        click.echo(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


@main.command()
@data_dir_option
@json_option
def rollback(data_dir: Path | None, as_json: bool) -> None:
    """Return the index to the version of the previous refresh."""
    from knowledge.index import IndexNotReady, KnowledgeIndex, RefreshInProgress

    index = KnowledgeIndex.from_settings(load_settings(data_dir))
    try:
        before, after = index.rollback()
    except (IndexNotReady, ValueError, RefreshInProgress) as exc:
        fail(str(exc))
    if as_json:
        print_json({"from_version": before, "to_version": after})
    else:
        click.echo(f"rolled back: version {before} -> contents of version {after}")


@main.command()
@data_dir_option
@json_option
def status(data_dir: Path | None, as_json: bool) -> None:
    """Index size, version and last refresh."""
    from knowledge.index import KnowledgeIndex

    stats = KnowledgeIndex.from_settings(load_settings(data_dir)).stats()
    if as_json:
        print_json(stats)
        return
    if not stats["exists"]:
        click.echo("no index yet: run `supportbot refresh`")
        return
    click.echo(f"{stats['documents']} documents, {stats['chunks']} chunks, version {stats['version']}")
    click.echo(f"indexes: {', '.join(stats['indexes']) or 'none'}")
    last = stats.get("last_refresh") or {}
    if last:
        totals = last.get("totals", {})
        click.echo(f"last refresh: {last.get('started_at')} ({', '.join(f'{k} {v}' for k, v in totals.items())})")


if __name__ == "__main__":
    main()
