"""Partner quotes (R16): for a new subscription (``buying``), or for the renewal of an existing
one (R27 [ours, issue 11]).

A renewal quote names the subscription it renews (``renews_subscription_id``) and the renewal
date it renews (``renews_at``). It may be issued and accepted from 90 days before that date
(R26) until the end of the late window after it (R27), never for a Cancelled subscription
(R34). Issuing one again for the same subscription replaces the open one: the replaced quote
says by which (``superseded_by``) and is refused at acceptance (409 ``quote-superseded``).

Accepting it (the buyer; pay by invoice allowed, R14; card/PayPal up to the R15 limit) places an
order of kind ``renewal`` for the same subscription and a ``RenewalRequested`` carrying the
quote's priced line (R16): lifecycle answers it with the ``RenewalDue`` of that renewal date,
carrying the line on, invoicing bills exactly it (R20: a three-year one in installments), and
the renewed term keeps the original anniversary (R27). A renewal already invoiced whose charge
was declined (R37) is not bought again through a quote (409 ``renewal-invoice-open``): the open
invoice is paid instead, so a renewal is never invoiced twice.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Literal

from shared.auth import Principal
from shared.contracts import QuoteIssued, RenewalRequested
from shared.errors import not_found

from .. import domain, schemas
from ..repository import Account, Quote, RenewalRequest, Subscription
from .access import UnitOfWork, locked_with_account
from .buying import (
    accept_new_subscription_quote,
    issue_new_subscription_quote,
    new_quote,
    record_order,
)


async def issue_quote(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, command: schemas.IssueQuote
) -> schemas.Quote:
    """R16: a partner quotes a new subscription, or (R27) the renewal of one of the account's."""
    if command.renews_subscription_id is None:
        return await issue_new_subscription_quote(uow, actor, account_id, command)
    return await issue_renewal_quote(
        uow, actor, account_id, command.renews_subscription_id, command
    )


async def accept_quote(
    uow: UnitOfWork, actor: Principal, quote_id: uuid.UUID, command: schemas.AcceptQuote
) -> schemas.Order:
    """R16: the buyer accepts and pays the vendor directly; R14 allows invoice; R15 applies."""
    quote = await uow.repo.quote(quote_id)
    if quote is None or quote.renews_subscription_id is None:
        return await accept_new_subscription_quote(uow, actor, quote_id, command)
    return await accept_renewal_quote(uow, actor, quote.renews_subscription_id, quote_id, command)


async def issue_renewal_quote(
    uow: UnitOfWork,
    actor: Principal,
    account_id: uuid.UUID,
    subscription_id: uuid.UUID,
    command: schemas.IssueQuote,
) -> schemas.Quote:
    """R27 [ours]: a partner quotes the renewal of the account's subscription, inside the
    renewal or late window; the subscription's open renewal quote is replaced by this one."""
    domain.check_partner(actor.kind)
    domain.check_offering(command.offering, command.term)
    unlocked = await uow.repo.subscription(subscription_id)
    if unlocked is None or unlocked.account_id != account_id:
        raise not_found("subscription")  # the partner names both: ids leak nothing
    account, subscription = await locked_with_account(uow, subscription_id)
    now = await uow.time.now(account_id)
    renewing = _check_renewable(subscription, command.offering, now)[1]
    await _check_not_requested(uow, subscription_id, renewing)
    quote = await new_quote(
        uow,
        actor,
        account,
        command,
        now,
        renews_subscription_id=subscription_id,
        renews_at=renewing,
    )
    await uow.repo.insert_quote(quote)
    replaced = await uow.repo.supersede_renewal_quotes(subscription_id, quote.id, now)
    issued = QuoteIssued(
        quote_id=quote.id,
        quote_number=quote.quote_number,
        partner_id=actor.subject,
        offering=quote.offering,
        term=quote.term,
        seats=quote.seats,
        currency=quote.currency,
        net_amount=quote.net_amount,
        valid_until=quote.valid_until,
        renews_subscription_id=subscription_id,
        replaces_quote_id=replaced[0] if replaced else None,  # at most one is open
    )
    await uow.events.emit(issued, account_id=account_id, subscription_id=subscription_id)
    return schemas.Quote.model_validate(quote)


async def accept_renewal_quote(
    uow: UnitOfWork,
    actor: Principal,
    subscription_id: uuid.UUID,
    quote_id: uuid.UUID,
    command: schemas.AcceptQuote,
) -> schemas.Order:
    """R27 [ours]: the buyer accepts a renewal quote: the same subscription is renewed on its
    anniversary at the quoted price (R16); pay by invoice allowed (R14), R15 and R34 apply."""
    account, subscription = await locked_with_account(uow, subscription_id)
    quote = await uow.repo.quote(quote_id, lock=True)
    if quote is None:
        raise not_found("quote")
    now = await uow.time.now(account.id)
    domain.check_quote_acceptable(
        quote.valid_until,
        quote.accepted_at is not None,
        now,
        account.time_zone,
        superseded_by=quote.superseded_by,
    )
    domain.check_quote_renews_current_term(quote.renews_at, subscription.renews_at)
    kind, renewing = _check_renewable(subscription, quote.offering, now)
    await _check_not_requested(uow, subscription_id, renewing)
    domain.check_payment_method(
        command.payment_method,
        via_partner_quote=True,
        has_invoice_subscription=False,
        usd_value=quote.usd_value,
        prepay_only=account.prepay_only,
    )
    order = await record_order(
        uow,
        dataclasses.replace(subscription, channel="partner"),
        placed_by=actor.subject,
        kind="renewal",
        placed_at=now,
        seats=quote.seats,
        term=quote.term,
        payment_method=command.payment_method,
        quote_id=quote.id,
    )
    await _request_renewal(uow, account, subscription, quote, kind, renewing, now, actor, command)
    await uow.repo.mark_quote_accepted(quote.id, order.id, now)
    return schemas.Order.model_validate(order)


def _check_renewable(
    subscription: Subscription, offering: str, now: datetime
) -> tuple[Literal["manual", "late"], datetime]:
    rules = subscription.for_rules()
    renews_as, _ = domain.renewed_as(
        rules, subscription.pending_offering, subscription.pending_term
    )
    return domain.renewal_quote_kind(rules, renews_as, offering, now)


async def _check_not_requested(
    uow: UnitOfWork, subscription_id: uuid.UUID, renewing: datetime
) -> None:
    """R27: one renewal per renewal date, whether requested directly or through a quote."""
    domain.check_renewal_not_requested(await uow.repo.renewal_requested(subscription_id, renewing))


async def _request_renewal(
    uow: UnitOfWork,
    account: Account,
    subscription: Subscription,
    quote: Quote,
    kind: Literal["manual", "late"],
    renewing: datetime,
    now: datetime,
    actor: Principal,
    command: schemas.AcceptQuote,
) -> None:
    """The renewal request the quote places, and its event with the quoted line (R16). From now
    the subscription is a partner's and renews with the method chosen (R14: pay by invoice now
    counts for the account); auto-renew is left as it is (R24)."""
    renewal = RenewalRequest(
        id=uuid.uuid4(),
        subscription_id=subscription.id,
        kind=kind,
        renews_at=renewing,
        payment_method=command.payment_method,
        requested_by=actor.subject,
        requested_at=now,
        quote_id=quote.id,
    )
    await uow.repo.insert_renewal_request(renewal)
    await uow.repo.update_subscription(
        subscription.id, channel="partner", payment_method=command.payment_method
    )
    requested = RenewalRequested(
        request_id=renewal.id,
        kind=renewal.kind,
        offering=quote.offering,
        term=quote.term,
        seats=quote.seats,
        payment_method=command.payment_method,
        channel="partner",
        requested_at=now,
        payment_token=command.payment_token,
        quote_id=quote.id,
        priced_lines=[
            domain.quoted_line(quote.offering, quote.term, quote.seats, quote.net_amount)
        ],
    )
    await uow.events.emit(requested, account_id=account.id, subscription_id=subscription.id)
