"""Orders, quotes and trials (R14-R17)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from shared import pricing as shared_pricing
from shared.auth import Principal
from shared.contracts import (
    ExchangeRateApplied,
    OrderPlaced,
    PaymentMethod,
    QuoteIssued,
    Term,
)
from shared.errors import not_found

from .. import domain, pricing, schemas
from ..pricing import PricedOrder, TermDates
from ..repository import (
    Account,
    Order,
    OrderKind,
    Quote,
    Subscription,
)
from .access import (
    READERS,
    UnitOfWork,
    authorize,
    locked_account,
)

# --- buying (R14-R17) ----------------------------------------------------------------------------


async def record_order(
    uow: UnitOfWork,
    subscription: Subscription,
    *,
    placed_by: uuid.UUID,
    kind: OrderKind,
    placed_at: datetime,
    seats: int | None = None,
    term: Term | None = None,
    payment_method: PaymentMethod | None = None,
    quote_id: uuid.UUID | None = None,
    priced: PricedOrder | None = None,
    dates: TermDates | None = None,
) -> Order:
    """The one way an order is written: for a new subscription or a later one of it; a new
    subscription's keeps the price and the dates the buyer is shown (R18-R20, R23)."""
    order = Order(
        id=uuid.uuid4(),
        order_number=domain.order_number(await uow.repo.next_order_number()),
        account_id=subscription.account_id,
        placed_by=placed_by,
        subscription_id=subscription.id,
        offering=subscription.offering,
        term=term or subscription.term,
        seats=seats or subscription.seats,
        payment_method=payment_method or subscription.payment_method,
        channel=subscription.channel,
        auto_renew=subscription.auto_renew,
        placed_at=placed_at,
        kind=kind,
        quote_id=quote_id,
        price=priced.price.model_dump_json() if priced else None,
        renews_at=dates.renews_at if dates else None,
        expires_at=dates.expires_at if dates else None,
        time_zone=dates.time_zone if dates else None,
    )
    await uow.repo.insert_order(order)
    return order


async def price_of(
    uow: UnitOfWork,
    account: Account,
    subscription: Subscription,
    *,
    quoted_net: Decimal | None = None,
) -> tuple[PricedOrder | None, TermDates | None]:
    """R18-R20, R23: the price and the dates of a new subscription's order; a trial has
    neither (R17: not invoiced; lifecycle dates its 30 days)."""
    if subscription.trial:
        return None, None
    placed_at = subscription.purchased_at
    billing = await uow.repo.billing_details(account.id)  # R18: reverse charge needs the VAT id
    rate = (
        None
        if quoted_net is not None
        else await uow.repo.applied_rate_at(account.currency, pricing.CHANNEL_RATE, placed_at)
    )
    priced = pricing.price_order(
        offering=subscription.offering,
        term=subscription.term,
        seats=subscription.seats,
        customer=pricing.Customer(
            account.country,
            account.currency,
            shared_pricing.tax_exemption(
                account.country, account.tax_exempt_reason, billing.vat_id if billing else None
            ),
            account.time_zone,
        ),
        placed_at=placed_at,
        rate_in_force=rate,
        quoted_net=quoted_net,
    )
    return priced, pricing.term_dates(placed_at, subscription.term, account.time_zone)


async def _sell(
    uow: UnitOfWork,
    account: Account,
    buyer_id: uuid.UUID,
    subscription: Subscription,
    *,
    quote_id: uuid.UUID | None,
    payment_token: str | None,
    quoted_net: Decimal | None = None,
) -> Order:
    """A new subscription: the order, ordering's subscription row and OrderPlaced, priced here
    (R16, R18-R20): invoicing bills ``priced_lines`` as they are."""
    buyer = await uow.repo.user(account.id, buyer_id)
    if buyer is None:
        raise not_found("account")
    priced, dates = await price_of(uow, account, subscription, quoted_net=quoted_net)
    order = await record_order(
        uow,
        subscription,
        placed_by=buyer_id,
        kind="trial" if subscription.trial else "purchase",
        placed_at=subscription.purchased_at,
        quote_id=quote_id,
        priced=priced,
        dates=dates,
    )
    await uow.repo.insert_subscription(subscription)
    placed = OrderPlaced(
        order_id=order.id,
        order_number=order.order_number,
        subscription_id=subscription.id,
        offering=subscription.offering,
        term=subscription.term,
        seats=subscription.seats,
        payment_method=subscription.payment_method,
        channel=subscription.channel,
        billing_country=account.country,
        currency=account.currency,
        time_zone=account.time_zone,
        placed_at=subscription.purchased_at,
        auto_renew=subscription.auto_renew,
        buyer_email=buyer.email,
        quote_id=quote_id,
        trial=subscription.trial,
        payment_token=payment_token,
        priced_lines=[priced.line] if priced else [],
        price=priced.price if priced else None,
        renews_at=dates.renews_at if dates else None,
        expires_at=dates.expires_at if dates else None,
    )
    await uow.events.emit(placed, account_id=account.id, subscription_id=subscription.id)
    return order


async def _new_subscription(
    uow: UnitOfWork, account: Account, command: schemas.PlaceOrder
) -> Subscription:
    """R14-R17, R34: what a direct order would sell the account now, or the refusal."""
    domain.check_offering(command.offering, command.term)
    if command.trial:
        domain.check_trial_size(command.seats)
    domain.check_order_payment(
        command.payment_method,
        trial=command.trial,
        has_invoice_subscription=await uow.repo.has_invoice_subscription(account.id),
        usd_value=domain.price(
            command.offering, command.term, command.seats, account.currency
        ).usd_value,
        prepay_only=account.prepay_only,
    )
    return Subscription(
        id=uuid.uuid4(),
        account_id=account.id,
        offering=command.offering,
        term=command.term,
        seats=command.seats,
        payment_method=command.payment_method,
        channel="direct",
        auto_renew=command.auto_renew,
        trial=command.trial,
        time_zone=account.time_zone,
        purchased_at=await uow.time.now(account.id),
    )


async def place_order(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, command: schemas.PlaceOrder
) -> schemas.Order:
    """A direct order (R16) or a trial (R17: at most 5 seats [ours]); R14, R15 and R34 apply
    (R15 [ours]: to a direct order's list price as to a quote), except to a trial. Priced here
    (R18-R20): the answer, the confirmation mail and the invoice carry the same figures."""
    account = await locked_account(uow, account_id)
    subscription = await _new_subscription(uow, account, command)
    order = await _sell(
        uow,
        account,
        actor.subject,
        subscription,
        quote_id=None,
        payment_token=command.payment_token,
    )
    return schemas.Order.model_validate(order)


async def preview_order(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, command: schemas.PlaceOrder
) -> schemas.OrderPreview:
    """R18-R20, R23: the order's price and dates if it were placed now, priced as placing it
    prices it (the same function, rate and calendar), refused as it would be; stores nothing."""
    account = await uow.repo.account(account_id)
    if account is None:
        raise not_found("account")
    subscription = await _new_subscription(uow, account, command)
    priced, dates = await price_of(uow, account, subscription)
    auto_renew = subscription.auto_renew
    return schemas.OrderPreview(
        offering=subscription.offering,
        term=subscription.term,
        seats=subscription.seats,
        payment_method=subscription.payment_method,
        auto_renew=auto_renew,
        trial=subscription.trial,
        priced_at=subscription.purchased_at,
        price=priced.price if priced else None,
        renews_at=dates.renews_at if dates else None,
        expires_at=dates.expires_at if dates else None,
        time_zone=account.time_zone,
        renewal_date=dates.renewal_date if dates and auto_renew else None,
        expiry_date=dates.expiry_date if dates and not auto_renew else None,
    )


async def record_applied_rate(uow: UnitOfWork, applied: ExchangeRateApplied) -> None:
    """R19: invoicing's applied rate, kept to price orders with (idempotent)."""
    await uow.repo.record_applied_rate(
        applied.currency, applied.channel, applied.effective_from, applied.rate
    )


async def get_order(uow: UnitOfWork, actor: Principal, order_id: uuid.UUID) -> schemas.Order:
    """An order is billing data: the buyer's (R8)."""
    order = await uow.repo.order(order_id)
    if order is None:
        raise not_found("order")
    await authorize(uow, actor, order.account_id, READERS, "see orders", "R8")
    return schemas.Order.model_validate(order)


async def list_orders(uow: UnitOfWork, actor: Principal, account_id: uuid.UUID) -> schemas.Orders:
    await authorize(uow, actor, account_id, READERS, "see orders", "R8")
    orders = await uow.repo.orders(account_id)
    return schemas.Orders(items=[schemas.Order.model_validate(o) for o in orders])


async def new_quote(
    uow: UnitOfWork,
    actor: Principal,
    account: Account,
    command: schemas.IssueQuote,
    now: datetime,
    *,
    renews_subscription_id: uuid.UUID | None = None,
    renews_at: datetime | None = None,
) -> Quote:
    """R16: a partner's quote priced from the list in the account's currency, numbered and
    dated now; a renewal quote (R27) names the subscription and the renewal date it renews."""
    price = domain.price(command.offering, command.term, command.seats, account.currency)
    return Quote(
        id=uuid.uuid4(),
        quote_number=domain.quote_number(await uow.repo.next_quote_number()),
        account_id=account.id,
        partner_id=actor.subject,
        offering=command.offering,
        term=command.term,
        seats=command.seats,
        currency=price.currency,
        net_amount=price.net_amount,
        usd_value=price.usd_value,
        valid_until=domain.quote_valid_until(command.valid_until, now, account.time_zone),
        issued_at=now,
        renews_subscription_id=renews_subscription_id,
        renews_at=renews_at,
    )


async def issue_new_subscription_quote(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, command: schemas.IssueQuote
) -> schemas.Quote:
    """R16: a partner quotes a new subscription for an account, priced from the list in the
    account's currency (a renewal quote is ``quotes.issue_renewal_quote``'s)."""
    domain.check_partner(actor.kind)
    domain.check_offering(command.offering, command.term)
    account = await uow.repo.account(account_id)
    if account is None:
        raise not_found("account")
    now = await uow.time.now(account_id)
    quote = await new_quote(uow, actor, account, command, now)
    await uow.repo.insert_quote(quote)
    issued = QuoteIssued(
        quote_id=quote.id,
        quote_number=quote.quote_number,
        partner_id=actor.subject,
        offering=command.offering,
        term=command.term,
        seats=command.seats,
        currency=quote.currency,
        net_amount=quote.net_amount,
        valid_until=quote.valid_until,
    )
    await uow.events.emit(issued, account_id=account_id)
    return schemas.Quote.model_validate(quote)


async def get_quote(uow: UnitOfWork, actor: Principal, quote_id: uuid.UUID) -> schemas.Quote:
    """The buyer, the issuing partner and support see a quote."""
    quote = await uow.repo.quote(quote_id)
    if quote is None:
        raise not_found("quote")
    if actor.kind == "partner":
        if not domain.partner_sees_quote(actor.subject, quote.partner_id):
            raise not_found("quote")
    else:
        await authorize(uow, actor, quote.account_id, READERS, "see quotes", "R8")
    return schemas.Quote.model_validate(quote)


async def accept_new_subscription_quote(
    uow: UnitOfWork, actor: Principal, quote_id: uuid.UUID, command: schemas.AcceptQuote
) -> schemas.Order:
    """R16: the buyer accepts a quote for a new subscription and pays the vendor directly; R14
    allows invoice; R15 applies."""
    quote = await uow.repo.quote(quote_id)
    account = await uow.repo.account(quote.account_id, lock=True) if quote else None
    locked = await uow.repo.quote(quote_id, lock=True)
    if account is None or locked is None:
        raise not_found("quote")
    now = await uow.time.now(account.id)
    domain.check_quote_acceptable(
        locked.valid_until, locked.accepted_at is not None, now, account.time_zone
    )
    domain.check_payment_method(
        command.payment_method,
        via_partner_quote=True,
        has_invoice_subscription=False,
        usd_value=locked.usd_value,
        prepay_only=account.prepay_only,
    )
    subscription = Subscription(
        id=uuid.uuid4(),
        account_id=account.id,
        offering=locked.offering,
        term=locked.term,
        seats=locked.seats,
        payment_method=command.payment_method,
        channel="partner",
        auto_renew=command.auto_renew,
        trial=False,
        time_zone=account.time_zone,
        purchased_at=now,
    )
    order = await _sell(
        uow,
        account,
        actor.subject,
        subscription,
        quote_id=quote_id,
        payment_token=command.payment_token,
        quoted_net=locked.net_amount,
    )
    await uow.repo.mark_quote_accepted(quote_id, order.id, order.placed_at)
    return schemas.Order.model_validate(order)
