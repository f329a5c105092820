"""Where the index lives: a local directory (the default) or an object store URI, and the small files
kept beside its table (refresh log, calibrations, gate reports, connector cursors).

LanceDB opens both kinds of location itself; everything else the index keeps goes through a
`Sidecar`, so the same code writes `data/index/calibration/v3.json` or
`s3://bucket/prefix/calibration/v3.json`. Both keep the same layout, and every write of a whole
file is atomic: a temporary file renamed into place on disk, one PUT on an object store (an
object appears whole or not at all). Appends on an object store are read-modify-write, safe
because only the index's one writer ever appends.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pyarrow.fs is imported on first use of an object store
    from pyarrow.fs import FileSystem

OBJECT_STORE_SCHEMES = ("s3", "gs")  # LanceDB also reads az://; its sidecar has no filesystem here yet


def is_remote(uri: str | Path) -> bool:
    return "://" in str(uri)


def object_store_options(uri: str, environ: Mapping[str, str]) -> dict[str, str]:
    """LanceDB's `storage_options` for an object store URI, from the standard AWS variables.
    LanceDB would read most of them itself; naming them here also makes `AWS_ENDPOINT_URL` (an
    S3-compatible store) and plain-http endpoints work, and lets the sidecar use the same ones."""
    scheme = urlsplit(uri).scheme
    if scheme not in OBJECT_STORE_SCHEMES or not urlsplit(uri).netloc:
        raise ValueError(
            f"unsupported index URI {uri!r}: use a local path or s3://bucket/prefix "
            f"({', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)})"
        )
    if scheme != "s3":
        return {}
    options: dict[str, str] = {}
    for key, names in {
        "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
        "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
        "aws_session_token": ("AWS_SESSION_TOKEN",),
        "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
        "endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    }.items():
        value = next((environ[name] for name in names if environ.get(name)), None)
        if value:
            options[key] = value
    if options.get("endpoint", "").startswith("http://"):
        options["allow_http"] = "true"
    return options


class Sidecar(Protocol):
    """Small text files beside the index table, named by relative paths ("calibration/v3.json")."""

    def read_text(self, name: str) -> str | None:
        """The file's text, or None when there is none."""
        ...

    def write_text(self, name: str, text: str) -> None:
        """Replace the file atomically: readers see the old text or the new, never a part."""
        ...

    def append_line(self, name: str, line: str) -> None:
        """Add one line at the end, durably (a crash right after never loses it)."""
        ...

    def names(self, folder: str) -> list[str]:
        """The file names directly in `folder` (empty when it does not exist)."""
        ...

    def delete(self, name: str) -> None:
        """Remove the file if it exists."""
        ...


class LocalSidecar:
    """Files in the index's own directory (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def read_text(self, name: str) -> str | None:
        try:
            return (self.root / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary name of its own: two processes writing one file (a bot saving the term statistics
        # a refresh also saves) must never rename each other's half-written temporary into place
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
        ) as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)

    def append_line(self, name: str, line: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def names(self, folder: str) -> list[str]:
        directory = self.root / folder
        return sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class ObjectSidecar:
    """Objects under the index's prefix on an object store (pyarrow's S3 or GCS filesystem)."""

    def __init__(self, filesystem: FileSystem, base: str) -> None:
        self.filesystem = filesystem
        self.base = base.rstrip("/")  # "bucket/prefix"

    def _path(self, name: str) -> str:
        return f"{self.base}/{name}"

    def read_text(self, name: str) -> str | None:
        try:
            with self.filesystem.open_input_stream(self._path(name)) as stream:
                return bytes(stream.read()).decode("utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, name: str, text: str) -> None:
        with self.filesystem.open_output_stream(self._path(name)) as stream:  # one PUT on close
            stream.write(text.encode("utf-8"))

    def append_line(self, name: str, line: str) -> None:
        self.write_text(name, (self.read_text(name) or "") + line + "\n")

    def names(self, folder: str) -> list[str]:
        from pyarrow.fs import FileSelector, FileType

        infos = self.filesystem.get_file_info(FileSelector(self._path(folder), allow_not_found=True))
        return sorted(info.base_name for info in infos if info.type == FileType.File)

    def delete(self, name: str) -> None:
        try:
            self.filesystem.delete_file(self._path(name))
        except FileNotFoundError:
            return


def open_sidecar(uri: str | Path, storage_options: Mapping[str, str]) -> Sidecar:
    """The sidecar of the index at `uri`, reaching the store with the same options as LanceDB."""
    if not is_remote(uri):
        return LocalSidecar(Path(uri))
    from pyarrow import fs

    parts = urlsplit(str(uri))
    base = f"{parts.netloc}{parts.path}"
    if parts.scheme != "s3":
        filesystem, base = fs.FileSystem.from_uri(str(uri))
        return ObjectSidecar(filesystem, base)
    endpoint = storage_options.get("endpoint")
    s3 = fs.S3FileSystem(
        access_key=storage_options.get("aws_access_key_id"),
        secret_key=storage_options.get("aws_secret_access_key"),
        session_token=storage_options.get("aws_session_token"),
        region=storage_options.get("region"),
        endpoint_override=urlsplit(endpoint).netloc if endpoint else None,
        scheme=urlsplit(endpoint).scheme if endpoint else "https",
    )
    return ObjectSidecar(s3, base)
