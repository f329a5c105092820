"""Source loaders: a folder of files, a JSONL help-center export, web pages and sitemaps.

Every loader turns its input into `Document`s and reports each item it could not read as a
`LoadFailure` naming that item, so one bad file never stops a refresh and never goes unmentioned.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

FOLDER_CONFIG = "supportbot-source.yml"  # optional, in a source folder: `base_url: https://help.example/`
SKIPPED_NAMES = {"readme.md", "license", "license.md", FOLDER_CONFIG}
TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


@dataclass(frozen=True)
class Document:
    """One article as it will be indexed: plain text with Markdown-style headings."""

    doc_id: str
    title: str
    url: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    anchors: dict[str, str] = field(default_factory=dict)  # heading text -> anchor id in the page

    @property
    def content_hash(self) -> str:
        """Changes whenever anything that ends up in the index changes."""
        payload = json.dumps(
            [self.title, self.url, self.text, self.metadata, self.anchors], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LoadFailure:
    item: str  # file path, URL or "file.jsonl:LINE"
    reason: str
    doc_id: str | None = None  # known id of a document that exists but could not be read now

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


@dataclass
class SourceLoad:
    """What one source yielded: documents, failures, and non-fatal warnings."""

    source: str
    documents: list[Document] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    complete: bool = True  # False when the source as a whole could not be listed: delete nothing
    # A connector's answer lists only what changed: documents it does not mention are kept, and
    # `deleted_ids` (deleted, archived, unpublished) are removed. Loaders list everything instead.
    incremental: bool = False
    deleted_ids: set[str] = field(default_factory=set)
    state: dict[str, Any] | None = None  # the connector's next cursor, persisted once the index committed
    api_calls: int = 0
    # An export's lines as read (a hash of each line's bytes -> its document id), and the ids of the
    # documents whose line was the same as at the last refresh, so they were not parsed again.
    line_ids: dict[str, str] = field(default_factory=dict)
    unchanged_ids: set[str] = field(default_factory=set)

    @property
    def protected_ids(self) -> set[str]:
        """Documents that failed this time but may still exist: keep their old chunks."""
        return {f.doc_id for f in self.failures if f.doc_id}


class DocumentError(ValueError):
    """A single item is unusable; the message says why in words an admin can act on."""


# --------------------------------------------------------------------------------------------
# Pure converters: bytes or strings in, Documents out.
# --------------------------------------------------------------------------------------------


def decode_text(data: bytes, item: str, warnings: list[str]) -> str:
    """UTF-8 first; legacy encodings are read as cp1252 with a warning rather than refused."""
    if b"\x00" in data[:8192]:
        raise DocumentError("binary file (contains NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.append(f"{item}: not valid UTF-8 (byte {exc.start}); read as Windows-1252")
        return data.decode("cp1252", errors="replace")


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """YAML front matter between `---` lines at the very top, if any."""
    match = re.match(r"\A---\s*\n(.*?)\n---\s*\n", text, flags=re.S)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # bad dates etc. raise ValueError from the loader
        raise DocumentError(f"front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise DocumentError("front matter is not a mapping of keys to values")
    return meta, text[match.end() :]


def first_heading_or_line(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:200]
    return ""


def html_to_document_parts(html: str) -> tuple[str, str, str, dict[str, str]]:
    """Title, canonical url, Markdown body and heading anchors of an HTML page.

    BeautifulSoup finds the article and drops navigation; html2text turns what is left into
    Markdown so that headings survive for heading-aware chunking.
    """
    import html2text
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    canonical = ""
    link = soup.find("link", rel=lambda value: value and "canonical" in value)
    if link and link.get("href"):
        canonical = str(link["href"])
    for tag in soup(["script", "style", "nav", "footer", "header", "aside", "noscript", "form"]):
        tag.decompose()
    main = soup.find("main") or soup.find("article") or soup.body or soup
    anchors = {
        heading.get_text(" ", strip=True): str(heading["id"])
        for heading in main.find_all(re.compile(r"^h[1-6]$"))
        if heading.get("id")
    }
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_links = True
    converter.ignore_emphasis = True
    body = converter.handle(str(main)).strip()
    h1 = main.find("h1")
    if h1 and h1.get_text(strip=True):
        title = h1.get_text(" ", strip=True)  # <title> often carries a " | Site name" suffix
    if not title:
        title = first_heading_or_line(body)
    return title, canonical, body, anchors


def pdf_to_text(data: bytes) -> tuple[str, str]:
    """Title (metadata or first line) and the text of every page."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"cannot read PDF: {exc}") from exc
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    return (str(meta_title).strip() or first_heading_or_line(text)), text


def check_document(doc: Document, max_bytes: int) -> Document:
    size = len(doc.text.encode("utf-8"))
    if not doc.text.strip():
        raise DocumentError("empty document (no text after conversion)")
    if size > max_bytes:
        raise DocumentError(
            f"too large: {size / 1e6:.1f} MB of text, limit {max_bytes / 1e6:.1f} MB "
            "(split it, or raise SUPPORTBOT_MAX_DOCUMENT_BYTES)"
        )
    return doc


def document_from_file_bytes(data: bytes, relative: str, source: str, file_url: str, warnings: list[str]) -> Document:
    """A file's bytes as a Document; the id is its path inside the source folder."""
    suffix = Path(relative).suffix.lower()
    anchors: dict[str, str] = {}
    meta: dict[str, Any] = {}
    if suffix in PDF_SUFFIXES:
        title, text = pdf_to_text(data)
        url = file_url
    elif suffix in HTML_SUFFIXES:
        title, url, text, anchors = html_to_document_parts(decode_text(data, relative, warnings))
        url = url or file_url
    else:
        meta, text = split_front_matter(decode_text(data, relative, warnings))
        title = str(meta.pop("title", "") or first_heading_or_line(text))
        url = str(meta.pop("url", "") or file_url)
    doc_id = str(meta.pop("id", "") or relative)
    return Document(
        doc_id=doc_id, title=title, url=url, text=text.strip(), source=source, metadata=meta, anchors=anchors
    )


def document_from_json_record(record: Any, source: str) -> Document:
    """One line of a help-center export: id, title, url, text or html; the rest is metadata."""
    if not isinstance(record, dict):
        raise DocumentError("expected a JSON object")
    record = dict(record)
    doc_id = str(record.pop("id", "") or "").strip()
    if not doc_id:
        raise DocumentError("missing 'id'")
    anchors: dict[str, str] = {}
    text = record.pop("text", None)
    html = record.pop("html", None)
    title = str(record.pop("title", "") or "")
    url = str(record.pop("url", "") or "")
    if text is None and html is not None:
        html_title, canonical, text, anchors = html_to_document_parts(str(html))
        title = title or html_title
        url = url or canonical
    if text is None:
        raise DocumentError("needs 'text' or 'html'")
    if not isinstance(text, str):
        raise DocumentError("'text' must be a string")
    return Document(
        doc_id=doc_id,
        title=title or first_heading_or_line(text),
        url=url or doc_id,
        text=text.strip(),
        source=source,
        metadata=record,
        anchors=anchors,
    )


def parse_sitemap(xml_text: str) -> tuple[list[str], list[str]]:
    """Page urls and nested sitemap urls listed in a sitemap or sitemap index."""
    root = ElementTree.fromstring(xml_text)
    locs = [el.text.strip() for el in root.iter(f"{SITEMAP_NS}loc") if el.text]
    if not locs:  # sitemaps without the namespace
        locs = [el.text.strip() for el in root.iter("loc") if el.text]
    if root.tag.endswith("sitemapindex"):
        return [], locs
    return locs, []


# --------------------------------------------------------------------------------------------
# Loaders with I/O: files and the web.
# --------------------------------------------------------------------------------------------


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def source_key(spec: str) -> str:
    """The stable name of a source in the index: a URL as given, a path made absolute."""
    return spec if is_url(spec) else str(Path(spec).expanduser().resolve())


def iter_source_files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*")):
        relative_parts = path.relative_to(root).parts
        if path.is_dir() or any(part.startswith(".") for part in relative_parts):
            continue
        yield path


def load_path(spec: str, max_bytes: int) -> SourceLoad:
    """A folder of Markdown/text/HTML/PDF files, a single such file, or a JSONL export."""
    result = SourceLoad(source=source_key(spec))
    result.documents.extend(iter_path(spec, max_bytes, result))
    return result


def iter_path(
    spec: str, max_bytes: int, result: SourceLoad, known_lines: dict[str, str] | None = None
) -> Iterator[Document]:
    """`load_path` one document at a time, failures and warnings recorded on `result` as they
    happen: a refresh chunks and embeds the first files while later ones are still being read,
    and never holds a whole large export in memory."""
    key = result.source
    root = Path(key)
    if not root.exists():
        result.complete = False
        result.failures.append(LoadFailure(spec, "no such file or folder"))
        return
    if root.is_file() and root.suffix.lower() in {".jsonl", ".ndjson"}:
        yield from iter_jsonl_file(root, max_bytes, result, known_lines)
        return
    files = [root] if root.is_file() else list(iter_source_files(root))
    base = root.parent if root.is_file() else root
    base_url = folder_base_url(base, result)
    for path in files:
        relative = path.relative_to(base).as_posix()
        suffix = path.suffix.lower()
        if path.name.lower() in SKIPPED_NAMES:
            continue
        if suffix not in TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES:
            result.warnings.append(f"{relative}: skipped, unsupported file type '{suffix or path.name}'")
            continue
        try:
            size = path.stat().st_size
            if size > max_bytes * 4 and suffix not in PDF_SUFFIXES:
                raise DocumentError(f"too large: {size / 1e6:.1f} MB file, limit {max_bytes / 1e6:.1f} MB of text")
            data = path.read_bytes()
            fallback_url = (
                f"{base_url}{Path(relative).with_suffix('').as_posix()}" if base_url else path.resolve().as_uri()
            )
            doc = check_document(
                document_from_file_bytes(data, relative, key, fallback_url, result.warnings), max_bytes
            )
        except (OSError, DocumentError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.failures.append(LoadFailure(relative, reason, doc_id=relative))
            continue
        yield doc


def listing_signature(spec: str) -> str | None:
    """A hash of the name, size and modification time of every file a path source would read,
    or None when there is nothing to list. Equal signatures mean the files were not touched, so a
    refresh may skip reading them (the index stores what they said when the signature was taken)."""
    root = Path(source_key(spec))
    try:
        files = [root] if root.is_file() else list(iter_source_files(root)) if root.is_dir() else []
        if not files:
            return None
        digest = hashlib.sha256()
        for path in files:
            info = path.stat()
            digest.update(f"{path.as_posix()}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def folder_base_url(folder: Path, result: SourceLoad) -> str:
    """The site a folder mirrors: files without their own url get base_url + path without suffix."""
    config = folder / FOLDER_CONFIG
    if not config.is_file():
        return ""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        base_url = str(data.get("base_url", "")) if isinstance(data, dict) else ""
    except (OSError, yaml.YAMLError) as exc:
        result.warnings.append(f"{FOLDER_CONFIG}: ignored, cannot read it ({exc})")
        return ""
    return base_url if not base_url or base_url.endswith("/") else base_url + "/"


def line_key(raw: bytes) -> str:
    return hashlib.blake2b(raw.rstrip(b"\r\n"), digest_size=12).hexdigest()


def iter_jsonl_file(
    path: Path, max_bytes: int, result: SourceLoad, known_lines: dict[str, str] | None = None
) -> Iterator[Document]:
    """One record per line, read line by line (an export may be gigabytes). A file that cannot be
    read or is binary is an incomplete load (nothing deleted); a bad line fails only itself; a
    repeated id keeps the first record. A line found in `known_lines` (byte for byte as at the last
    refresh) is not parsed: its document is noted in `result.unchanged_ids` instead."""
    try:
        handle = open(path, "rb")  # noqa: SIM115  # closed by the `with` below, after the binary check
    except OSError as exc:
        result.complete = False
        result.failures.append(LoadFailure(str(path), exc.strerror or str(exc)))
        return
    with handle:
        try:
            if b"\x00" in handle.read(8192):
                raise DocumentError("binary file (contains NUL bytes), not text")
            handle.seek(0)
        except (OSError, DocumentError) as exc:
            result.complete = False
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.failures.append(LoadFailure(str(path), reason or str(exc)))
            return
        seen: set[str] = set()
        legacy = False  # warned once per file, as a whole-file decode would
        for number, raw in enumerate(handle, start=1):
            key = line_key(raw)
            if known_lines and key in known_lines and known_lines[key] not in seen:
                seen.add(known_lines[key])
                result.unchanged_ids.add(known_lines[key])
                result.line_ids[key] = known_lines[key]
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                if not legacy:
                    legacy = True
                    result.warnings.append(
                        f"{path.name}: not valid UTF-8 (line {number}, byte {exc.start}); read as Windows-1252"
                    )
                line = raw.decode("cp1252", errors="replace")
            if not line.strip():
                continue
            item = f"{path.name}:{number}"
            record_id = None
            try:
                record = json.loads(line)
                record_id = str(record.get("id")) if isinstance(record, dict) and record.get("id") else None
                doc = check_document(document_from_json_record(record, result.source), max_bytes)
            except json.JSONDecodeError as exc:
                result.failures.append(LoadFailure(item, f"bad JSON: {exc.msg} at column {exc.colno}"))
                continue
            except DocumentError as exc:
                failed = f"{item} (id {record_id})" if record_id else item
                result.failures.append(LoadFailure(failed, str(exc), record_id))
                continue
            if doc.doc_id in seen:
                result.failures.append(LoadFailure(f"{path.name} (id {doc.doc_id})", "duplicate id; first one kept"))
                continue
            seen.add(doc.doc_id)
            result.line_ids[key] = doc.doc_id
            yield doc


async def load_url(spec: str, *, max_bytes: int, timeout: float, concurrency: int) -> SourceLoad:
    """A web page, or every page of a sitemap (nested sitemap indexes followed)."""
    import aiohttp

    result = SourceLoad(source=spec)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    headers = {"User-Agent": "supportbot-refresh/0.1"}
    async with aiohttp.ClientSession(timeout=client_timeout, headers=headers) as session:

        async def fetch(url: str) -> tuple[str, bytes, str]:
            async with session.get(url) as response:
                if response.status >= 400:
                    raise DocumentError(f"HTTP {response.status}")
                body = await response.content.read(max_bytes * 4 + 1)
                if len(body) > max_bytes * 4:
                    raise DocumentError(f"too large: over {max_bytes * 4 / 1e6:.1f} MB")
                return str(response.url), body, response.headers.get("Content-Type", "")

        pages: list[str] = []
        sitemaps = [spec] if spec.rstrip("/").endswith(".xml") else []
        if not sitemaps:
            pages.append(spec)
        seen_maps: set[str] = set()
        while sitemaps:
            sitemap_url = sitemaps.pop()
            if sitemap_url in seen_maps:
                continue
            seen_maps.add(sitemap_url)
            try:
                _, body, _ = await fetch(sitemap_url)
                found_pages, nested = await asyncio.to_thread(parse_sitemap, body.decode("utf-8", errors="replace"))
                pages.extend(found_pages)
                sitemaps.extend(nested)
            except (TimeoutError, DocumentError, ElementTree.ParseError, aiohttp.ClientError) as exc:
                if sitemap_url == spec:
                    result.complete = False
                result.failures.append(LoadFailure(sitemap_url, describe_fetch_error(exc, timeout)))

        limiter = asyncio.Semaphore(max(1, concurrency))

        async def load_page(url: str) -> None:
            async with limiter:
                try:
                    final_url, body, content_type = await fetch(url)
                    # Parsing a page takes tens of milliseconds of CPU: in a worker thread, so answers
                    # keep flowing on the event loop during a /kb-refresh.
                    doc, warnings = await asyncio.to_thread(
                        document_from_page, body, url, final_url, content_type, spec, max_bytes
                    )
                    result.warnings.extend(warnings)
                    result.documents.append(doc)
                except (TimeoutError, DocumentError, aiohttp.ClientError) as exc:
                    result.failures.append(LoadFailure(url, describe_fetch_error(exc, timeout), doc_id=url))
                    if url == spec:
                        result.complete = False

        await asyncio.gather(*(load_page(url) for url in dict.fromkeys(pages)))
    result.documents.sort(key=lambda doc: doc.doc_id)
    return result


def document_from_page(
    body: bytes, url: str, final_url: str, content_type: str, source: str, max_bytes: int
) -> tuple[Document, list[str]]:
    """A fetched page (HTML or PDF) as a checked Document, with the decoding warnings. CPU-bound: run it off the loop."""
    warnings: list[str] = []
    if "pdf" in content_type or url.lower().endswith(".pdf"):
        title, text = pdf_to_text(body)
        doc = Document(doc_id=url, title=title, url=final_url, text=text.strip(), source=source)
    else:
        title, canonical, text, anchors = html_to_document_parts(decode_text(body, url, warnings))
        doc = Document(doc_id=url, title=title, url=canonical or final_url, text=text, source=source, anchors=anchors)
    return check_document(doc, max_bytes), warnings


def describe_fetch_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out after {timeout:g} s"
    return str(exc) or type(exc).__name__


async def load_source(spec: str, *, max_bytes: int, timeout: float = 15.0, concurrency: int = 8) -> SourceLoad:
    """Any source spec: a URL is fetched, anything else is read from disk in a worker thread."""
    if is_url(spec):
        return await load_url(spec, max_bytes=max_bytes, timeout=timeout, concurrency=concurrency)
    return await asyncio.to_thread(load_path, spec, max_bytes)
