"""A throwaway PostgreSQL server: initdb and pg_ctl from Debian's `postgresql` package, in a temp dir.

PostgreSQL refuses to run as root (CI runs as root), so the cluster is made and run as the
`postgres` system user the Debian package creates (or `nobody`), in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path


class EngineUnavailable(RuntimeError):
    """The engine cannot start here; the message says why (tests skip with it)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise EngineUnavailable("PostgreSQL is not installed (apt-get install -y postgresql): no initdb")
    return Path(candidates[-1]).parent


def run_as() -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a non-root user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise EngineUnavailable("running as root and there is no postgres or nobody user to run PostgreSQL as")


@dataclass
class PostgresServer:
    root: Path
    port: int
    bin_dir: Path
    prefix: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self) -> str:
        """A fresh, empty database on this server; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start on a free port; raises EngineUnavailable (with the log) when it cannot."""
    bin_dir = postgres_bin_dir()
    prefix = run_as()
    root = Path(tempfile.mkdtemp(prefix="supportbot-pg-"))
    if prefix:
        user = prefix[2]
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    initdb = subprocess.run(
        [
            *prefix,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise EngineUnavailable(f"initdb failed: {initdb.stderr.strip()[-500:]}")
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    started = subprocess.run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        log_text = (root / "log").read_text(errors="replace")[-800:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise EngineUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]} {log_text}")
    return PostgresServer(root, port, bin_dir, prefix)
