"""The roles projection every service keeps (shared/people.py) on real PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from shared import people
from shared.contracts import Person, RolesChanged
from shared.db import create_pool, migrate
from tests.support import Backing, create_database, drop_database, unique

pytestmark = pytest.mark.integration


def person(name: str) -> Person:
    return Person(
        user_id=uuid.uuid4(), email=f"{name}@example.com", name=name.title(), language="nb"
    )


async def test_r8_a_roles_snapshot_replaces_the_accounts_people_in_one_statement(
    backing: Backing, tmp_path: Path
) -> None:
    name = unique("test_people_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn)
    try:
        await migrate(pool, tmp_path)  # the shared migrations only
        account, other_account = uuid.uuid4(), uuid.uuid4()
        buyer, admin, payer, leaving = (person(n) for n in ("kari", "ola", "per", "liv"))
        async with pool.acquire() as conn:
            await people.apply_snapshot(
                conn,
                account,
                RolesChanged(buyer=buyer, primary_admin=admin, payers=[payer, leaving]),
            )
            await people.apply_snapshot(
                conn, other_account, RolesChanged(buyer=leaving, primary_admin=leaving)
            )
            calls: list[str] = []

            class Counting:
                def __getattr__(self, attribute: str) -> Any:
                    calls.append(attribute)
                    return getattr(conn, attribute)

            renamed = payer.model_copy(update={"email": "per.new@example.com"})
            # the admin leaves, the buyer is also a payer now, Per changed his address
            await people.apply_snapshot(
                Counting(),  # type: ignore[arg-type]
                account,
                RolesChanged(buyer=buyer, primary_admin=buyer, payers=[buyer, renamed]),
            )
            assert calls == ["fetch"], "one round trip for the whole snapshot"
            rows = await conn.fetch(
                "SELECT user_id, email, roles FROM account_people WHERE account_id = $1", account
            )
            held = {r["user_id"]: (r["email"], sorted(r["roles"])) for r in rows}
            assert held == {
                buyer.user_id: (buyer.email, ["buyer", "payer", "primary_admin"]),
                payer.user_id: ("per.new@example.com", ["payer"]),
            }
            assert await people.roles_of(conn, account, admin.user_id) == set()
            assert await people.roles_of(conn, account, leaving.user_id) == set()
            # another account's people are untouched
            assert await people.roles_of(conn, other_account, leaving.user_id) == {
                "buyer",
                "primary_admin",
            }
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)
