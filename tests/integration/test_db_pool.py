"""The pool (shared.db.create_pool): a release costs no round trip, and still leaves nothing of
one user's transaction or listeners to the next (issue 17)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.db import create_pool
from tests.support import Backing, create_database, drop_database, unique


@pytest.fixture
async def pool(backing: Backing) -> AsyncIterator[asyncpg.Pool]:
    name = unique("test_pool_")
    pool = await create_pool(await create_database(backing.postgres_dsn, name), size=1)
    try:
        yield pool
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


async def test_a_release_sends_nothing_to_the_server(pool: asyncpg.Pool) -> None:
    sent: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
        await conn.fetchval("SELECT 1")
    assert sent == ["SELECT 1"]  # no reset query after it


async def test_the_next_user_gets_no_open_transaction_and_no_listeners(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        first_pid = conn.get_server_pid()
        transaction = conn.transaction()
        await transaction.start()  # left open, as by a crash in the middle of a unit of work
        await conn.execute("CREATE TABLE left_behind (id int)")
        await conn.add_listener("somewhere", lambda *_: None)
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == first_pid  # the same session, reused
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('left_behind')") is None  # rolled back
        assert not conn._con._listeners  # type: ignore[attr-defined]
