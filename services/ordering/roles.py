"""Ordering's rules for the people of an account (R1-R6): who is buyer, primary and secondary
admin, payer, and the snapshot ordering publishes. Pure, like ``domain.py``, which re-exports
them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from shared.contracts import Person, RolesChanged
from shared.errors import Invalid, NotFound

PAYER_LIMIT = 5  # R6


# --- roles (R1-R6) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    buyer: uuid.UUID
    primary_admin: uuid.UUID
    secondary_admins: tuple[uuid.UUID, ...] = ()
    payers: tuple[uuid.UUID, ...] = ()


def first_roles(buyer: uuid.UUID) -> Roles:
    """R1: the user who opens the account and places its first order is buyer and primary admin."""
    return Roles(buyer=buyer, primary_admin=buyer)


def roles_from_rows(rows: Iterable[tuple[uuid.UUID, Iterable[str]]]) -> Roles:
    buyer = primary = None
    secondary: list[uuid.UUID] = []
    payers: list[uuid.UUID] = []
    for user_id, held in rows:
        held = set(held)
        if "buyer" in held:
            buyer = user_id
        if "primary_admin" in held:
            primary = user_id
        if "secondary_admin" in held:
            secondary.append(user_id)
        if "payer" in held:
            payers.append(user_id)
    if buyer is None or primary is None:
        raise ValueError("an account always has a buyer and a primary admin")
    return Roles(buyer, primary, tuple(sorted(secondary)), tuple(sorted(payers)))


def transfer_primary_admin(roles: Roles, to: uuid.UUID) -> Roles:
    """R3: the previous primary admin (the buyer, at first) becomes a secondary admin."""
    if to == roles.primary_admin:
        return roles
    secondary = [u for u in roles.secondary_admins if u != to] + [roles.primary_admin]
    return replace(roles, primary_admin=to, secondary_admins=tuple(sorted(set(secondary))))


def appoint_secondary_admin(roles: Roles, user: uuid.UUID) -> Roles:
    """R4: appointed by the primary admin; the primary admin is not also a secondary one."""
    if user == roles.primary_admin or user in roles.secondary_admins:
        return roles
    return replace(roles, secondary_admins=tuple(sorted({*roles.secondary_admins, user})))


def remove_secondary_admin(roles: Roles, user: uuid.UUID) -> Roles:
    """R4."""
    if user not in roles.secondary_admins:
        raise NotFound("not-found", "Not found", "That user is not a secondary admin.")
    return replace(roles, secondary_admins=tuple(u for u in roles.secondary_admins if u != user))


def change_buyer(roles: Roles, user: uuid.UUID) -> Roles:
    """R5: support's action; the previous buyer keeps any admin role it holds."""
    return replace(roles, buyer=user)


def add_payer(roles: Roles, user: uuid.UUID) -> Roles:
    """R6: at most five payers; a sixth is refused and nothing changes."""
    if user in roles.payers:
        return roles
    if len(roles.payers) >= PAYER_LIMIT:
        raise Invalid(
            "payer-limit",
            "Too many payers",
            f"An account may have at most {PAYER_LIMIT} payers (R6); remove one first.",
            limit=PAYER_LIMIT,
            rule="R6",
        )
    return replace(roles, payers=tuple(sorted({*roles.payers, user})))


def remove_payer(roles: Roles, user: uuid.UUID) -> Roles:
    if user not in roles.payers:
        raise NotFound("not-found", "Not found", "That user is not a payer of the account.")
    return replace(roles, payers=tuple(u for u in roles.payers if u != user))


def user_of_account(users: Mapping[uuid.UUID, Person], user_id: uuid.UUID) -> uuid.UUID:
    """A role goes to a user of the account only."""
    if user_id not in users:
        raise NotFound("not-found", "Not found", "No user with that id in this account.")
    return user_id


def snapshot(roles: Roles, people: Mapping[uuid.UUID, Person]) -> RolesChanged:
    """The full RolesChanged snapshot (never a delta)."""
    return RolesChanged(
        buyer=people[roles.buyer],
        primary_admin=people[roles.primary_admin],
        secondary_admins=[people[u] for u in roles.secondary_admins],
        payers=[people[u] for u in roles.payers],
    )
