"""PostgreSQL access: the connection pool and the migrations runner.

Migrations are plain SQL files, ``NNNN_name.sql``: first ``shared/migrations`` (outbox, inbox,
idempotency keys), then the service's own. Each is applied once, in a transaction, under an
advisory lock so two replicas starting together do not race, and recorded in
``schema_migrations``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# A connection as handed out by the pool, or a bare one: what every repository function takes.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 7_316_001  # any constant; the same in every service


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without a round trip. asyncpg's default reset sends ``pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` on every release: one more round trip and one more commit
    per use of the pool (issue 17 measured it as a large share of all commits). The pool still
    rolls back an open transaction and drops listener callbacks (``Connection._reset``); session
    state is never left behind here: locks and settings are transaction-scoped
    (``pg_advisory_xact_lock``, ``SET LOCAL``), and the two session-scoped users undo their own
    (``migrate`` unlocks, the LISTEN loops remove their listeners before releasing)."""


async def create_pool(dsn: str, size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, command_timeout=60, reset=_keep_session
    )
    if pool is None:  # pragma: no cover - asyncpg types it Optional
        raise RuntimeError("could not create the database pool")
    return pool


def migration_files(*folders: Path) -> list[tuple[str, Path]]:
    """(id, path) of every migration, shared first, each folder in file-name order."""
    found: list[tuple[str, Path]] = []
    for folder in folders:
        for path in sorted(folder.glob("*.sql")):
            found.append((f"{folder.parent.name}/{path.stem}", path))
    return found


async def migrate(pool: asyncpg.Pool, service_migrations: Path) -> list[str]:
    """Apply what has not been applied yet; returns the ids applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       id text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["id"] for r in await conn.fetch("SELECT id FROM schema_migrations")}
            for migration_id, path in migration_files(SHARED_MIGRATIONS, service_migrations):
                if migration_id in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (id) VALUES ($1)", migration_id
                    )
                applied_now.append(migration_id)
                log.info("migration applied: %s", migration_id)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now
