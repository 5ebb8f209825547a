"""A subscription's reads and changes: conversion, auto-renew, term, product, seats, renewals
and refunds (R17, R24, R26-R30, R38)."""

from __future__ import annotations

import uuid

from shared.auth import Principal
from shared.contracts import (
    AutoRenewChanged,
    PaymentMethodAdded,
    PaymentMethodRemoved,
    ProductSwitchScheduled,
    RefundApproved,
    RenewalPaymentMethodChanged,
    RenewalRequested,
    SeatsAdded,
    TermChangeScheduled,
    TrialConverted,
)
from shared.errors import invalid_field, not_found
from shared.time.calendar import local_date

from .. import domain, schemas
from ..repository import (
    Refund,
    RenewalRequest,
    SavedPaymentMethod,
)
from .access import (
    READERS,
    UnitOfWork,
    authorize,
    locked_subscription,
    locked_with_account,
)
from .buying import record_order

# --- subscriptions: reads, conversion, changes, renewals, refunds ------------------------------


async def list_subscriptions(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID
) -> schemas.Subscriptions:
    """Renewal data is the buyer's (R8)."""
    await authorize(uow, actor, account_id, READERS, "see subscriptions", "R8")
    rows = await uow.repo.subscriptions(account_id)
    return schemas.Subscriptions(items=[schemas.Subscription.model_validate(s) for s in rows])


async def get_subscription(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID
) -> schemas.Subscription:
    subscription = await uow.repo.subscription(subscription_id)
    if subscription is None:
        raise not_found("subscription")
    await authorize(uow, actor, subscription.account_id, READERS, "see subscriptions", "R8")
    return schemas.Subscription.model_validate(subscription)


async def convert_trial(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID, command: schemas.ConvertTrial
) -> schemas.Order:
    """R17: the trial becomes a paid subscription in place: same subscription id."""
    account, subscription = await locked_with_account(uow, subscription_id)
    if command.term is not None:
        domain.check_offering(subscription.offering, command.term)
    now = await uow.time.now(account.id)
    domain.check_convertible(subscription.for_rules(), now)
    term, seats = command.term or subscription.term, command.seats or subscription.seats
    domain.check_payment_method(
        command.payment_method,
        via_partner_quote=subscription.channel == "partner",
        has_invoice_subscription=await uow.repo.has_invoice_subscription(account.id),
        usd_value=domain.price(subscription.offering, term, seats, account.currency).usd_value,
        prepay_only=account.prepay_only,
    )
    order = await record_order(
        uow,
        subscription,
        placed_by=actor.subject,
        kind="conversion",
        placed_at=now,
        seats=seats,
        term=term,
        payment_method=command.payment_method,
    )
    await uow.repo.update_subscription(
        subscription_id,
        trial=False,
        term=term,
        seats=seats,
        payment_method=command.payment_method,
        purchased_at=now,
        purchase_kind="order",
    )
    converted = TrialConverted(
        order_id=order.id,
        order_number=order.order_number,
        term=term,
        seats=seats,
        payment_method=command.payment_method,
        converted_at=now,
        payment_token=command.payment_token,
    )
    await uow.events.emit(converted, account_id=account.id, subscription_id=subscription_id)
    return schemas.Order.model_validate(order)


async def set_auto_renew(
    uow: UnitOfWork, subscription_id: uuid.UUID, command: schemas.SetAutoRenew
) -> schemas.Subscription:
    """R24: turning auto-renew off cancels at the expiry date (full access until then)."""
    subscription = await locked_subscription(uow, subscription_id)
    domain.check_auto_renew_change(subscription.for_rules())
    if subscription.auto_renew != command.auto_renew:
        now = await uow.time.now(subscription.account_id)
        await uow.repo.update_subscription(subscription_id, auto_renew=command.auto_renew)
        await uow.events.emit(
            AutoRenewChanged(auto_renew=command.auto_renew, changed_at=now),
            account_id=subscription.account_id,
            subscription_id=subscription_id,
        )
    return schemas.Subscription.model_validate(await locked_subscription(uow, subscription_id))


async def change_renewal_payment_method(
    uow: UnitOfWork, subscription_id: uuid.UUID, command: schemas.ChangeRenewalPaymentMethod
) -> schemas.Subscription:
    """R14 (the seed's "Endre til en annen betalingsmåte"), judged here once for every way a
    subscription is paid: pay-by-invoice from 2024-09-16 only with another subscription already
    paid by invoice (else through a partner quote); a card or PayPal renewal names one of the
    account's saved methods and stays within R15. Invoicing (which charges with it, an open
    failed charge at once) and lifecycle (which bills the next renewal so) trust the event."""
    account, subscription = await locked_with_account(uow, subscription_id)
    domain.check_auto_renew_change(subscription.for_rules())  # Cancelled is final (R34)
    now = await uow.time.now(account.id)
    method_id = command.payment_method_id
    if command.payment_method == "invoice":
        if method_id is not None:
            raise invalid_field("payment_method_id", "Pay-by-invoice names no saved method.")
        if subscription.payment_method != "invoice":
            domain.check_renewal_switch_to_invoice(
                local_date(now, subscription.time_zone),
                has_other_invoice_subscription=await uow.repo.has_invoice_subscription(
                    account.id, other_than=subscription_id
                ),
                prepay_only=account.prepay_only,
            )
    else:
        saved = await uow.repo.saved_payment_method(method_id) if method_id else None
        if saved is None or saved.removed or saved.account_id != account.id:
            raise invalid_field(
                "payment_method_id", "Name one of the account's saved card or PayPal methods."
            )
        if saved.kind != command.payment_method:
            raise invalid_field("payment_method", f"That saved method is {saved.kind}.")
        domain.check_payment_method(
            command.payment_method,
            via_partner_quote=subscription.channel == "partner",
            has_invoice_subscription=False,
            usd_value=domain.price(
                subscription.offering, subscription.term, subscription.seats, account.currency
            ).usd_value,
        )
    await uow.repo.update_subscription(subscription_id, payment_method=command.payment_method)
    changed = RenewalPaymentMethodChanged(
        payment_method=command.payment_method, payment_method_id=method_id, changed_at=now
    )
    await uow.events.emit(changed, account_id=account.id, subscription_id=subscription_id)
    return schemas.Subscription.model_validate(await locked_subscription(uow, subscription_id))


async def record_saved_payment_method(
    uow: UnitOfWork, account_id: uuid.UUID, added: PaymentMethodAdded
) -> None:
    """Invoicing's wallet, as far as R14 needs it: which saved method is whose."""
    method = SavedPaymentMethod(added.payment_method_id, account_id, added.kind, False)
    await uow.repo.record_saved_payment_method(method)


async def record_removed_payment_method(uow: UnitOfWork, removed: PaymentMethodRemoved) -> None:
    known = await uow.repo.saved_payment_method(removed.payment_method_id)
    if known is not None:
        await uow.repo.record_saved_payment_method(
            SavedPaymentMethod(known.id, known.account_id, known.kind, True)
        )


async def change_term(
    uow: UnitOfWork, subscription_id: uuid.UUID, command: schemas.ChangeTerm
) -> schemas.Subscription:
    """R28: the new term takes effect at the next renewal; changeable or withdrawn until then."""
    subscription = await locked_subscription(uow, subscription_id)
    effective_at = domain.term_change_effective_at(
        subscription.for_rules(), command.new_term, await uow.time.now(subscription.account_id)
    )
    await uow.repo.update_subscription(subscription_id, pending_term=command.new_term)
    await uow.events.emit(
        TermChangeScheduled(new_term=command.new_term, effective_at=effective_at),
        account_id=subscription.account_id,
        subscription_id=subscription_id,
    )
    return schemas.Subscription.model_validate(await locked_subscription(uow, subscription_id))


async def switch_product(
    uow: UnitOfWork, subscription_id: uuid.UUID, command: schemas.SwitchProduct
) -> schemas.Subscription:
    """R29: only in the renewal window, only if bought or renewed after 2024-09-16."""
    subscription = await locked_subscription(uow, subscription_id)
    effective_at = domain.product_switch_effective_at(
        subscription.for_rules(),
        command.new_offering,
        await uow.time.now(subscription.account_id),
    )
    await uow.repo.update_subscription(subscription_id, pending_offering=command.new_offering)
    await uow.events.emit(
        ProductSwitchScheduled(new_offering=command.new_offering, effective_at=effective_at),
        account_id=subscription.account_id,
        subscription_id=subscription_id,
    )
    return schemas.Subscription.model_validate(await locked_subscription(uow, subscription_id))


async def add_seats(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID, command: schemas.AddSeats
) -> schemas.SeatsOrder:
    """R30: licences added are co-termed with the subscription, priced pro rata by days."""
    account, subscription = await locked_with_account(uow, subscription_id)
    prorate_from, coterm_until = domain.coterm_period(
        subscription.for_rules(), await uow.time.now(account.id)
    )
    total = domain.total_seats(subscription.seats, command.seats)
    order = await record_order(
        uow,
        subscription,
        placed_by=actor.subject,
        kind="seats",
        placed_at=prorate_from,
        seats=command.seats,
    )
    await uow.repo.update_subscription(subscription_id, seats=total)
    added = SeatsAdded(
        order_id=order.id,
        order_number=order.order_number,
        offering=subscription.offering,
        term=subscription.term,
        seats_added=command.seats,
        total_seats=total,
        prorate_from=prorate_from,
        coterm_until=coterm_until,
        payment_method=subscription.payment_method,
        billing_country=account.country,
        currency=account.currency,
        time_zone=subscription.time_zone,
        payment_token=command.payment_token,
    )
    await uow.events.emit(added, account_id=account.id, subscription_id=subscription_id)
    return schemas.SeatsOrder.model_validate(
        {**vars(order), "total_seats": total, "coterm_until": coterm_until}
    )


async def request_renewal(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID, command: schemas.RequestRenewal
) -> schemas.Renewal:
    """R26, R27: a manual renewal from 90 days before the renewal date, or a late one after it
    (45 days annual/three-year, 30 days monthly), one per renewal date. Pending term or product
    changes apply (R28, R29)."""
    account, subscription = await locked_with_account(uow, subscription_id)
    rules = subscription.for_rules()
    now = await uow.time.now(account.id)
    kind = domain.renewal_kind(rules, now)
    renewing = domain.renews_at(rules)
    domain.check_renewal_not_requested(await uow.repo.renewal_requested(subscription_id, renewing))
    offering, term = domain.renewed_as(
        rules, subscription.pending_offering, subscription.pending_term
    )
    method = command.payment_method or subscription.payment_method
    domain.check_payment_method(
        method,
        via_partner_quote=subscription.channel == "partner",
        has_invoice_subscription=await uow.repo.has_invoice_subscription(account.id),
        usd_value=domain.price(offering, term, subscription.seats, account.currency).usd_value,
        prepay_only=account.prepay_only,
    )
    renewal = RenewalRequest(
        id=uuid.uuid4(),
        subscription_id=subscription_id,
        kind=kind,
        renews_at=renewing,
        payment_method=method,
        requested_by=actor.subject,
        requested_at=now,
    )
    await uow.repo.insert_renewal_request(renewal)
    requested = RenewalRequested(
        request_id=renewal.id,
        kind=kind,
        offering=offering,
        term=term,
        seats=subscription.seats,
        payment_method=method,
        channel=subscription.channel,
        requested_at=now,
        payment_token=command.payment_token,
    )
    await uow.events.emit(requested, account_id=account.id, subscription_id=subscription_id)
    return schemas.Renewal.model_validate(
        {**vars(renewal), "offering": offering, "term": term, "seats": subscription.seats}
    )


async def request_refund(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID, command: schemas.RequestRefund
) -> schemas.Refund:
    """R38: direct purchases only, inside 15 (monthly) or 30 days (annual, three-year) of the
    purchase or renewal, never for non-refundable products. R39: access ends at once."""
    subscription = await locked_subscription(uow, subscription_id)
    now = await uow.time.now(subscription.account_id)
    purchase_kind, purchased_at = domain.check_refundable(subscription.for_rules(), now)
    refund = Refund(
        id=uuid.uuid4(),
        subscription_id=subscription_id,
        purchase_kind=purchase_kind,
        purchased_at=purchased_at,
        reason=command.reason,
        approved_by=actor.subject,
        approved_at=now,
    )
    await uow.repo.insert_refund(refund)
    await uow.repo.update_subscription(
        subscription_id, refunded_at=now, stage="cancelled", auto_renew=False
    )
    approved = RefundApproved(
        refund_id=refund.id,
        purchase_kind=purchase_kind,
        purchased_at=purchased_at,
        reason=command.reason,
        approved_at=now,
    )
    await uow.events.emit(
        approved, account_id=subscription.account_id, subscription_id=subscription_id
    )
    return schemas.Refund.model_validate(refund)
