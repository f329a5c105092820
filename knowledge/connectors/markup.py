"""Pure converters from what the APIs return to Markdown with headings (which the chunker cuts at).

HTML (Zendesk article bodies, Confluence storage format) goes through the same converter as web
pages; reStructuredText, MDX and Notion blocks get small dedicated ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from knowledge.sources import html_to_document_parts, split_front_matter

RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
RST_DIRECTIVE = re.compile(r"^\.\.\s+[\w:-]+::")
MDX_MODULE_LINE = re.compile(r"^(import|export)\s")
MDX_COMPONENT_LINE = re.compile(r"^\s*</?[A-Z][\w.]*(\s[^>]*)?/?>\s*$")


def html_to_markdown(html: str) -> tuple[str, dict[str, str]]:
    """An HTML fragment's Markdown body and heading anchors."""
    _, _, body, anchors = html_to_document_parts(f"<html><body><main>{html}</main></body></html>")
    return body, anchors


def rst_to_markdown(text: str) -> str:
    """Section titles (underlined, optionally overlined) become `#` headings, levels in order of first
    use as the RST spec defines them; directive lines are dropped, their indented content kept."""
    lines = text.splitlines()
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        over = bool(RST_ADORNMENT.match(line)) and i + 2 < len(lines) and RST_ADORNMENT.match(lines[i + 2])
        if over and lines[i + 1].strip():
            style, title, i = (line.strip()[0], True), lines[i + 1].strip(), i + 3
        elif (
            line.strip()
            and not RST_ADORNMENT.match(line)
            and i + 1 < len(lines)
            and RST_ADORNMENT.match(lines[i + 1])
            and len(lines[i + 1].rstrip()) >= len(line.rstrip())
        ):
            style, title, i = (lines[i + 1].strip()[0], False), line.strip(), i + 2
        else:
            if not RST_DIRECTIVE.match(line):
                out.append(line)
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        out.append(f"{'#' * min(6, styles.index(style) + 1)} {title}")
    return "\n".join(out).strip()


def mdx_to_markdown(text: str) -> str:
    """MDX without its module lines (import/export) and lines that are only a JSX component tag."""
    kept = [
        line for line in text.splitlines() if not MDX_MODULE_LINE.match(line) and not MDX_COMPONENT_LINE.match(line)
    ]
    return "\n".join(kept).strip()


def docs_file_to_markdown(path: str, text: str) -> tuple[dict[str, Any], str]:
    """Front matter and Markdown body of a .md, .mdx or .rst file."""
    meta, body = split_front_matter(text)
    lower = path.lower()
    if lower.endswith(".rst"):
        return meta, rst_to_markdown(body)
    if lower.endswith(".mdx"):
        return meta, mdx_to_markdown(body)
    return meta, body.strip()


def rich_text(items: Sequence[dict[str, Any]] | None) -> str:
    return "".join(str(item.get("plain_text", "")) for item in items or [])


NOTION_PREFIX = {
    "heading_1": "# ",
    "heading_2": "## ",
    "heading_3": "### ",
    "bulleted_list_item": "- ",
    "numbered_list_item": "1. ",
    "quote": "> ",
    "callout": "> ",
    "toggle": "",
    "paragraph": "",
}


def notion_blocks_to_markdown(blocks: Sequence[dict[str, Any]], depth: int = 0) -> str:
    """Notion blocks (with their fetched `children` nested under each block) as Markdown."""
    out: list[str] = []
    indent = "  " * depth
    for block in blocks:
        kind = str(block.get("type", ""))
        value = block.get(kind) or {}
        if kind == "code":
            language = value.get("language", "")
            out.append(f"{indent}```{language}\n{rich_text(value.get('rich_text'))}\n{indent}```")
        elif kind == "to_do":
            mark = "x" if value.get("checked") else " "
            out.append(f"{indent}- [{mark}] {rich_text(value.get('rich_text'))}")
        elif kind == "divider":
            out.append(f"{indent}---")
        elif kind in NOTION_PREFIX:
            text = rich_text(value.get("rich_text"))
            prefix = NOTION_PREFIX[kind]
            out.append(f"{prefix}{text}" if kind.startswith("heading") else f"{indent}{prefix}{text}")
        children = block.get("children") or []
        if children:
            nested = depth + 1 if kind.endswith("list_item") or kind == "toggle" else depth
            out.append(notion_blocks_to_markdown(children, nested))
    return "\n\n".join(part for part in out if part.strip())


CDATA_BODY = re.compile(r"<ac:plain-text-body>\s*<!\[CDATA\[(.*?)\]\]>\s*</ac:plain-text-body>", flags=re.S)


def confluence_storage_to_markdown(storage: str) -> tuple[str, dict[str, str]]:
    """Confluence storage format (XHTML with `ac:` macros) as Markdown: code macro bodies are CDATA,
    which an HTML parser drops, so they become <pre> blocks first."""
    import html

    return html_to_markdown(CDATA_BODY.sub(lambda match: f"<pre>{html.escape(match.group(1))}</pre>", storage))
