"""The roles projection every service keeps from ``RolesChanged`` snapshots.

Access is decided from these rows at request time, never from token claims alone.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection

import asyncpg

from shared.auth import Principal
from shared.contracts import Person, RolesChanged
from shared.db import Conn
from shared.errors import Forbidden, not_found


def roles_by_person(snapshot: RolesChanged) -> dict[uuid.UUID, tuple[Person, set[str]]]:
    """One entry per person, with every role that person holds."""
    held: dict[uuid.UUID, set[str]] = defaultdict(set)
    people: dict[uuid.UUID, Person] = {}
    assignments = [("buyer", snapshot.buyer), ("primary_admin", snapshot.primary_admin)]
    assignments += [("secondary_admin", p) for p in snapshot.secondary_admins]
    assignments += [("payer", p) for p in snapshot.payers]
    for role, person in assignments:
        held[person.user_id].add(role)
        people[person.user_id] = person
    return {uid: (people[uid], held[uid]) for uid in people}


async def apply_snapshot(
    conn: Conn, account_id: uuid.UUID, snapshot: RolesChanged
) -> list[asyncpg.Record]:
    """Replace the account's people with the snapshot (a snapshot, never a delta), in one
    statement: the snapshot's people are upserted and everyone else of the account deleted
    (disjoint rows, so the two parts never touch the same row). Returns the people now held
    (email, name, language, roles) ordered by email and user id."""
    people = roles_by_person(snapshot)
    entries = list(people.items())
    if any("," in role for _, (_, roles) in entries for role in roles):
        raise ValueError("a role name with a comma")
    return await conn.fetch(
        """WITH snapshot AS (
               SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
                   AS s(user_id, email, name, language, roles)),
           gone AS (
               DELETE FROM account_people
               WHERE account_id = $1 AND NOT (user_id = ANY($2::uuid[]))),
           held AS (
               INSERT INTO account_people (account_id, user_id, email, name, language, roles)
               SELECT $1, user_id, email, name, language, string_to_array(roles, ',')
               FROM snapshot
               ON CONFLICT (account_id, user_id) DO UPDATE SET email = EXCLUDED.email,
                   name = EXCLUDED.name, language = EXCLUDED.language, roles = EXCLUDED.roles
               RETURNING user_id, email, name, language, roles)
           SELECT email, name, language, roles FROM held ORDER BY email, user_id""",
        account_id,
        [uid for uid, _ in entries],
        [p.email for _, (p, _) in entries],
        [p.name for _, (p, _) in entries],
        [p.language for _, (p, _) in entries],
        [",".join(sorted(roles)) for _, (_, roles) in entries],
    )


async def roles_of(
    conn: Conn | asyncpg.Pool, account_id: uuid.UUID, user_id: uuid.UUID
) -> set[str]:
    row = await conn.fetchrow(
        "SELECT roles FROM account_people WHERE account_id = $1 AND user_id = $2",
        account_id,
        user_id,
    )
    return set(row["roles"]) if row else set()


def check_role(roles: set[str], allowed: Collection[str], what: str) -> set[str]:
    """R8, the one access rule every service applies: operators (``"operator"`` in ``roles``)
    pass; a stranger gets 404 (ids leak nothing); a member without one of ``allowed`` 403."""
    if "operator" in roles:
        return roles
    if not roles:
        raise not_found(what)
    if not roles & set(allowed):
        raise Forbidden(
            "role-required",
            "Your role does not allow this",
            f"Only {' or '.join(sorted(allowed))} may do this (R8).",
            rule="R8",
            required_roles=sorted(allowed),
        )
    return roles


async def roles_held(
    conn: Conn | asyncpg.Pool, principal: Principal, account_id: uuid.UUID
) -> set[str]:
    """What the caller is in the account: ``{"operator"}`` for operators, the user's roles."""
    if principal.kind == "operator":
        return {"operator"}
    if principal.kind != "user":
        return set()
    return await roles_of(conn, account_id, principal.subject)


async def require_role(
    conn: Conn | asyncpg.Pool,
    principal: Principal,
    account_id: uuid.UUID,
    allowed: set[str],
    what: str,
) -> set[str]:
    """``check_role`` on the caller's roles in the account, read from the projection."""
    return check_role(await roles_held(conn, principal, account_id), allowed, what)
