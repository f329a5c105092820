"""Versioned SQL migrations: `migrations/NNNN_name.sql`, applied in order by `supportbot db upgrade`.

Plain SQL files rather than alembic: the schema is small, there is no ORM to autogenerate from,
and an operator can read (or run by hand) exactly what will change. Each file runs in its own
transaction and is recorded in `schema_migrations`; a session advisory lock makes replicas that
upgrade at once take turns, so each file runs exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x5B07_0001  # pg advisory lock key: one migrator at a time


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files, oldest first (their names start with a zero-padded number)."""
    return [Migration(path.stem, path) for path in sorted(directory.glob("[0-9]*.sql"))]


def applied(conn: psycopg.Connection) -> set[str]:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz)")
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def pending(url: str) -> list[str]:
    """Versions not applied yet (what `supportbot db upgrade` would run)."""
    with psycopg.connect(url, autocommit=True) as conn:
        done = applied(conn)
    return [migration.version for migration in available() if migration.version not in done]


def upgrade(url: str) -> list[str]:
    """Apply every pending migration; returns the versions applied now (empty: up to date)."""
    ran: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            done = applied(conn)
            for migration in available():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, now())", (migration.version,)
                    )
                ran.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return ran
