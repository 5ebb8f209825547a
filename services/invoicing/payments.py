"""The buyer's payment center (issue 11): saved card and PayPal methods (R2), the default, the
method each subscription renews with, paying an open invoice now (the seed's "klikk på Betal"),
and charging a failed charge at once when a method is added or chosen. Part of the service
layer (``service.py`` re-exports these).

Who decides what:
- ordering judges how a subscription renews (R14, R15, R34: ``PUT /v1/subscriptions/{id}/
  payment-method``) and says so in ``RenewalPaymentMethodChanged``; invoicing trusts it and
  charges with the saved method it names (``renewal_method_changed``).
- invoicing keeps the wallet: a token is accepted only when the gateway describes it
  (``PaymentGateway.describe``), and only its label is ever shown.
- A subscription is charged with the saved method chosen for it, else the account's default,
  else the token it was bought with (``billing.charged_with``).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass

from shared import people
from shared.auth import Principal
from shared.contracts import (
    PaymentMethod,
    PaymentMethodAdded,
    PaymentMethodRemoved,
    RenewalPaymentMethodChanged,
)
from shared.errors import invalid_field, not_found
from shared.messaging import WaitForCause

from . import domain
from .billing import (
    UnitOfWork,
    business_time,
    charge_invoice,
    money,
    settle_invoice,
)
from .commands import BillingTime, Cause
from .gateway import GatewayUnavailable, InvalidToken, TokenDescription, gateway_for
from .models import ChargeAttempt, Payment, SavedMethod

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewMethod:
    kind: PaymentMethod  # card or paypal
    token: str
    make_default: bool = False


@dataclass(frozen=True)
class PayWith:
    """How an invoice is paid now: a saved method (the buyer's) or a one-off gateway token.
    ``request_ref`` makes the gateway's idempotency key (a repeat charges once)."""

    request_ref: str
    payment_method_id: uuid.UUID | None = None
    kind: PaymentMethod | None = None
    token: str | None = None


async def require_role(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, allowed: frozenset[str], what: str
) -> set[str]:
    """R8 with the actor's roles: strangers 404, members without the role 403. Operators never
    act in the customer's name here (a wallet and a payment are the customer's)."""
    roles = await uow.repo.roles_of(account_id, actor.subject) if actor.kind == "user" else set()
    people.check_role(roles, allowed, what)
    return roles


async def described(kind: PaymentMethod, token: str, field: str) -> TokenDescription:
    try:
        return await gateway_for(kind).describe(token=token)
    except InvalidToken:
        raise invalid_field(
            field, f"The {kind} gateway does not know this token; send a gateway token."
        ) from None


# --- the wallet ----------------------------------------------------------------------------------


async def add_payment_method(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, new: NewMethod
) -> SavedMethod:
    """R2: the buyer saves a card or PayPal token the gateway knows. The first one, or one
    ``make_default``, becomes the default; then the failed charges of the subscriptions that
    renew with the default are charged with it at once (issue 11)."""
    await require_role(uow, actor, account_id, domain.PAYMENT_METHOD_OWNERS, "payment methods")
    description = await described(new.kind, new.token, "payment_token")
    now = await uow.time.now(account_id)
    existing = await uow.repo.payment_methods(account_id)
    method = SavedMethod(
        id=uuid.uuid4(),
        account_id=account_id,
        kind=new.kind,
        token=new.token,
        label=description.label,
        is_default=new.make_default or not existing,
        added_at=now,
    )
    await uow.repo.insert_payment_method(method)
    added = PaymentMethodAdded(
        payment_method_id=method.id,
        kind="paypal" if method.kind == "paypal" else "card",
        label=method.label,
        is_default=method.is_default,
        added_at=now,
    )
    await uow.events.emit(added, account_id=account_id)
    if method.is_default:
        await charge_followers_at_once(uow, account_id, method, Cause(account_id, None, now))
    return method


async def list_payment_methods(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID
) -> list[SavedMethod]:
    await require_role(uow, actor, account_id, domain.PAYMENT_METHOD_OWNERS, "payment methods")
    return await uow.repo.payment_methods(account_id)


async def saved_method(uow: UnitOfWork, actor: Principal, method_id: uuid.UUID) -> SavedMethod:
    """The live saved method, when the actor is its account's buyer (R8: strangers 404)."""
    method = await uow.repo.get_payment_method(method_id)
    if method is None or method.removed_at is not None:
        raise not_found("payment method")
    await require_role(
        uow, actor, method.account_id, domain.PAYMENT_METHOD_OWNERS, "payment methods"
    )
    return method


async def remove_payment_method(
    uow: UnitOfWork, actor: Principal, method_id: uuid.UUID
) -> SavedMethod:
    """R2; [ours] refused (409 ``payment-method-in-use``) while a live card/PayPal subscription
    renews with it, by choice or as the default it follows."""
    method = await saved_method(uow, actor, method_id)
    subscriptions = await uow.repo.live_gateway_subscriptions(method.account_id)
    renewing = [
        s
        for s in subscriptions
        if domain.renews_with(s.payment_method_id, method.id, method.is_default)
    ]
    domain.require_removable(method.label, len(renewing))
    now = await uow.time.now(method.account_id)
    await uow.repo.remove_payment_method(method.id, now)
    removed = PaymentMethodRemoved(payment_method_id=method.id, removed_at=now)
    await uow.events.emit(removed, account_id=method.account_id)
    return dataclasses.replace(method, is_default=False, removed_at=now)


async def set_default_payment_method(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, method_id: uuid.UUID
) -> SavedMethod:
    """The account's default; the failed charges of subscriptions that follow the default are
    charged with it at once (issue 11)."""
    await require_role(uow, actor, account_id, domain.PAYMENT_METHOD_OWNERS, "payment methods")
    method = await saved_method(uow, actor, method_id)
    if method.account_id != account_id:
        raise not_found("payment method")
    if not method.is_default:
        await uow.repo.set_default_payment_method(account_id, method.id)
        method = dataclasses.replace(method, is_default=True)
        now = await uow.time.now(account_id)
        await charge_followers_at_once(uow, account_id, method, Cause(account_id, None, now))
    return method


# --- the method a subscription renews with --------------------------------------------------------


async def renewal_method_changed(
    uow: UnitOfWork, cause: Cause, changed: RenewalPaymentMethodChanged
) -> None:
    """R14 judged by ordering, trusted here: the subscription renews (and its retries charge)
    with the saved method named. A failed charge still open is charged with it at once; a
    decline there keeps the R37 retries, now with this method (issue 11). A switch to invoice
    changes the next renewal; an open card invoice stays as it is (its retries go on)."""
    if cause.subscription_id is None:
        return
    sub = await uow.repo.get_subscription(cause.subscription_id)
    if sub is None:
        raise WaitForCause(
            f"subscription:{cause.subscription_id}", "its OrderPlaced is not handled"
        )
    method = (
        await uow.repo.get_payment_method(changed.payment_method_id)
        if changed.payment_method_id is not None
        else None
    )
    kind: PaymentMethod = method.kind if method is not None else changed.payment_method
    await uow.repo.update_subscription(
        sub.id, payment_method=kind, payment_method_id=method.id if method else None
    )
    if method is not None and method.removed_at is None:
        await charge_open_invoices(uow, sub.id, method, await business_time(uow, cause))


async def charge_followers_at_once(
    uow: UnitOfWork, account_id: uuid.UUID, default: SavedMethod, cause: Cause
) -> None:
    """The subscriptions that follow the default (none chosen for them) have their open failed
    card/PayPal charges charged with it now."""
    when = await business_time(uow, cause)
    for sub in await uow.repo.live_gateway_subscriptions(account_id):
        if sub.payment_method_id is None:
            await charge_open_invoices(uow, sub.id, default, when)


async def charge_open_invoices(
    uow: UnitOfWork, subscription_id: uuid.UUID, method: SavedMethod, when: BillingTime
) -> None:
    """Issue 11: a failed charge is charged at once with the method just added or chosen (the
    next attempt number, so the gateway key is new); success pays it (InvoicePaid: lifecycle
    returns the subscription to Active, R32, R33) and its retries stop; a decline keeps the R37
    retries, which now use this method. The same invoice: never a second one."""
    for invoice_id in await uow.repo.open_gateway_invoices(subscription_id):
        invoice = await uow.repo.lock_invoice(invoice_id)
        if invoice is None or invoice.status != "issued":
            continue
        await uow.repo.set_invoice_payment(invoice.id, method.kind, method.token)
        invoice = dataclasses.replace(
            invoice, payment_method=method.kind, payment_token=method.token
        )
        attempts = await uow.repo.charge_attempts(invoice.id)
        failed = [a.attempted_at for a in attempts if not a.succeeded]
        try:
            await charge_invoice(
                uow,
                when,
                invoice,
                attempt=len(attempts) + 1,
                first_failed_at=min(failed) if failed else None,
            )
        except GatewayUnavailable:
            # Nothing was recorded for this attempt; the R37 retries (now with this method)
            # charge it later. The method is saved or chosen all the same.
            log.warning("invoice %s: gateway unavailable, left to its retries", invoice.id)


# --- paying an invoice now -----------------------------------------------------------------------


async def pay_invoice(
    uow: UnitOfWork, actor: Principal, invoice_id: uuid.UUID, pay: PayWith
) -> Payment:
    """The seed's "klikk på Betal": the buyer (a saved method or a one-off token) or a payer
    (a one-off token) pays an open invoice in full now. Declined: 402 ``payment-declined`` and
    nothing stored (the R37 retries keep their days); paid already: 409. Success is the same
    PaymentSucceeded + InvoicePaid as any charge (lifecycle reactivates, R32, R33)."""
    invoice = await uow.repo.get_invoice(invoice_id)
    if invoice is None:
        raise not_found("invoice")
    roles = await require_role(uow, actor, invoice.account_id, domain.INVOICE_PAYERS, "invoice")
    kind, token = await paid_with(uow, actor, roles, invoice.account_id, pay)
    locked = await uow.repo.lock_invoice(invoice_id)
    if locked is None:
        raise not_found("invoice")
    domain.require_payable(locked.status, locked.invoice_number)
    when = BillingTime(await uow.time.now(locked.account_id))
    result = await gateway_for(kind).charge(
        amount=money(locked.gross_total, locked.currency),
        currency=locked.currency,
        token=token,
        idempotency_key=f"{locked.id}:pay:{pay.request_ref}",
    )
    if not result.succeeded:
        raise domain.declined(result.failure_reason or "declined")
    attempts = await uow.repo.charge_attempts(locked.id)
    await uow.repo.record_charge_attempt(
        ChargeAttempt(locked.id, len(attempts) + 1, True, None, result.reference, when.at)
    )
    return await settle_invoice(uow, when, locked, method=kind, reference=result.reference)


async def paid_with(
    uow: UnitOfWork, actor: Principal, roles: set[str], account_id: uuid.UUID, pay: PayWith
) -> tuple[PaymentMethod, str]:
    if pay.payment_method_id is not None:
        domain.require_saved_method_allowed(roles)
        method = await uow.repo.get_payment_method(pay.payment_method_id)
        if method is None or method.removed_at is not None or method.account_id != account_id:
            raise invalid_field("payment_method_id", "No saved payment method with that id.")
        return method.kind, method.token
    if pay.kind is None or pay.token is None:
        raise invalid_field("payment_token", "Name a saved payment method or a gateway token.")
    await described(pay.kind, pay.token, "payment_token")
    return pay.kind, pay.token
