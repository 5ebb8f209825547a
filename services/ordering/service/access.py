"""Who may act on an account (R8), and finding what a use case acts on, locked.

The door runs ``authorize`` and its companions before the Idempotency-Key is looked at, so a
refusal stores nothing and a stranger learns nothing (404).
"""

from __future__ import annotations

import uuid

from shared.auth import Principal
from shared.errors import not_found
from shared.unit_of_work import Work

from .. import domain, schemas
from ..repository import (
    Account,
    Quote,
    Repository,
    Subscription,
)

UnitOfWork = Work[Repository]

ADMINS = frozenset({"primary_admin", "secondary_admin"})
BUYER = frozenset({"buyer"})
READERS = frozenset({"buyer", "operator"})  # billing data: the buyer's and support's (R8)


# --- access (R8) ---------------------------------------------------------------------------------


async def authorize(
    uow: UnitOfWork,
    actor: Principal,
    account_id: uuid.UUID,
    allowed: frozenset[str],
    what: str,
    rule: str,
) -> set[str]:
    """404 for a stranger to the account, 403 for a member (or operator) without one of
    ``allowed``. Operators read everything; they act in a customer's name only where
    ``allowed`` names them."""
    held: set[str] = set()
    if actor.kind == "operator":
        held = {"operator"}
    elif actor.kind == "user":
        held = await uow.repo.roles_of(account_id, actor.subject)
    if not held:
        raise not_found("account")
    domain.check_actor(held, set(allowed), what, rule)
    return held


async def buyers_subscription(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID, what: str, rule: str
) -> Subscription:
    """R2: a subscription's changes, renewals and refunds are the buyer's."""
    subscription = await uow.repo.subscription(subscription_id)
    if subscription is None:
        raise not_found("subscription")
    await authorize(uow, actor, subscription.account_id, BUYER, what, rule)
    return subscription


async def quote_for_buyer(uow: UnitOfWork, actor: Principal, quote_id: uuid.UUID) -> Quote:
    """R16: only the quoted account's buyer accepts a quote."""
    quote = await uow.repo.quote(quote_id)
    if quote is None:
        raise not_found("quote")
    await authorize(uow, actor, quote.account_id, BUYER, "accept quotes", "R16")
    return quote


async def locked_account(uow: UnitOfWork, account_id: uuid.UUID) -> Account:
    account = await uow.repo.account(account_id, lock=True)
    if account is None:
        raise not_found("account")
    return account


async def locked_subscription(uow: UnitOfWork, subscription_id: uuid.UUID) -> Subscription:
    subscription = await uow.repo.subscription(subscription_id, lock=True)
    if subscription is None:
        raise not_found("subscription")
    return subscription


async def locked_with_account(
    uow: UnitOfWork, subscription_id: uuid.UUID
) -> tuple[Account, Subscription]:
    """The account's lock first, then the subscription's (the order every writer takes)."""
    unlocked = await uow.repo.subscription(subscription_id)
    if unlocked is None:
        raise not_found("subscription")
    account = await locked_account(uow, unlocked.account_id)
    return account, await locked_subscription(uow, subscription_id)


async def may_place_order(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, command: schemas.PlaceOrder
) -> None:
    """R2: only the buyer orders, and only what the catalogue sells."""
    await authorize(uow, actor, account_id, BUYER, "place orders", "R2")
    domain.check_offering(command.offering, command.term)


def may_issue_quote(actor: Principal, command: schemas.IssueQuote) -> None:
    """R16: partners quote, for what the catalogue sells."""
    domain.check_partner(actor.kind)
    domain.check_offering(command.offering, command.term)


async def may_convert_trial(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID, command: schemas.ConvertTrial
) -> None:
    """R17: the buyer converts, to a term the product is sold with."""
    trial = await buyers_subscription(uow, actor, subscription_id, "convert trials", "R17")
    if command.term is not None:
        domain.check_offering(trial.offering, command.term)
