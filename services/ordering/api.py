"""Ordering's HTTP door: accounts and roles, orders and quotes, subscription changes, refunds.

Access (R8): a bearer token only says who calls; the account's roles (``account_people``) say
what the caller may do, at request time. A stranger to the account gets 404, a member without
the role 403. Operators (support) read everything and change the buyer (R5); they do not act in
the customer's name. Partners (``kind=partner``, subject = partner id) issue quotes for an
account whose id the customer gave them; only that account's buyer can accept the quote, and a
partner reads only its own quotes.

Every write takes an ``Idempotency-Key``; the answer to a key is stored with the write it
describes, so a repeat returns it and creates nothing; a refused request stores nothing. The
access check runs first, then the key, then the use case (``service``) in the key's
transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shared.auth import Caller, Principal, issue_token, verify_token
from shared.contracts import BillingIdentity, Person, RolesChanged
from shared.db import Conn
from shared.idempotency import run_keyed
from shared.problems import READ, WRITE, problem_responses
from shared.runtime import Runtime, as_json, runtime_of
from shared.unit_of_work import Work

from . import domain, schemas, service
from .repository import PostgresRepository

ANSWER = TypeVar("ANSWER", bound=BaseModel)
RESULT = TypeVar("RESULT")


router = APIRouter(prefix="/v1", tags=["ordering"])  # bodies: 16 KiB (shared.guard)
WRITES = problem_responses(*WRITE)
PRIMARY_ADMIN = frozenset({"primary_admin"})
OPERATOR = frozenset({"operator"})
READS = problem_responses(*READ)
Result = TypeVar("Result")
Answer = TypeVar("Answer", bound=BaseModel)
UseCase = Callable[[service.UnitOfWork], Awaitable[Result]]


def _unit_of_work(runtime: Runtime, conn: Conn) -> service.UnitOfWork:
    return Work.on(PostgresRepository(conn), conn, runtime.outbox, runtime.clock)


@dataclass
class Door:
    """One request at the door: who calls, and for a write its Idempotency-Key."""

    request: Request
    caller: Principal
    key: str | None = None

    async def read(self, use_case: UseCase[Result]) -> Result:
        """A query, or a write's access check, on a connection of its own."""
        runtime = runtime_of(self.request)
        async with runtime.pool.acquire() as conn:
            return await use_case(_unit_of_work(runtime, conn))

    async def answer(self, use_case: UseCase[Answer]) -> JSONResponse:
        return _answer(await self.read(use_case))

    async def authorize(
        self, account_id: uuid.UUID, allowed: frozenset[str], what: str, rule: str
    ) -> None:
        """R8, before the Idempotency-Key: 404 for a stranger, 403 without the role."""
        who = self.caller
        await self.read(lambda uow: service.authorize(uow, who, account_id, allowed, what, rule))

    async def buyers(self, subscription_id: uuid.UUID, what: str, rule: str) -> None:
        """R2, before the Idempotency-Key: a subscription's changes are the buyer's."""
        who = self.caller
        await self.read(
            lambda uow: service.buyers_subscription(uow, who, subscription_id, what, rule)
        )

    async def write(
        self, body: BaseModel | None, use_case: UseCase[Answer], status: int = 200
    ) -> JSONResponse:
        answered, document = await _keyed(
            self.request, self.caller, self.key, body, use_case, status
        )
        return JSONResponse(document, status_code=answered)


def _answer(model: BaseModel, status: int = 200) -> JSONResponse:
    """Serialised as the door always has (``as_json``): ISO datetimes, amounts as numbers."""
    return JSONResponse(as_json(model.model_dump()), status_code=status)


async def _keyed(
    request: Request,
    caller: Principal | None,
    key: str | None,
    body: BaseModel | None,
    use_case: UseCase[Answer],
    status: int,
) -> tuple[int, dict[str, Any]]:
    """Run ``use_case`` once per (caller, key); the same key with another body is refused."""
    runtime = runtime_of(request)

    async def once(conn: Conn) -> tuple[int, dict[str, Any]]:
        answer = await use_case(_unit_of_work(runtime, conn))
        return status, as_json(answer.model_dump())

    return await run_keyed(
        runtime.pool,
        scope=f"ordering:{caller.kind}:{caller.subject}" if caller else "ordering:public",
        method=request.method,
        path=request.url.path,
        key=key,
        body=body.model_dump(mode="json") if body is not None else {},
        work=once,
    )


async def _reader(request: Request, caller: Caller) -> Door:
    return Door(request, caller)


async def _writer(
    request: Request,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Door:
    return Door(request, caller, idempotency_key)


Reader = Annotated[Door, Depends(_reader)]
Writer = Annotated[Door, Depends(_writer)]


def _check_may_attach_test_clock(runtime: Runtime, authorization: str | None) -> None:
    domain.check_test_clocks_enabled(runtime.settings.test_clocks_enabled)
    caller = verify_token(runtime.settings, runtime.clock, authorization)
    domain.check_operator_attaches_test_clock(caller.kind)


# --- accounts and roles (R1-R6) ---------------------------------------------------------------


@router.post(
    "/accounts",
    status_code=201,
    summary="Open an account",
    response_model=schemas.OpenedAccount,
    responses=problem_responses(400, 401, 403, 409, 413, 422),
)
async def open_account(
    body: schemas.OpenAccount,
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Public sign-up: the first user becomes buyer and primary admin (R1) and gets a token.
    A repeat with the same Idempotency-Key answers the same account without a token."""
    runtime = runtime_of(request)
    domain.check_account_fields(body.country, body.currency, body.time_zone)
    if body.test_clock_id is not None:
        _check_may_attach_test_clock(runtime, request.headers.get("authorization"))
    opened_now: list[bool] = []

    async def open_it(uow: service.UnitOfWork) -> schemas.NewAccount:
        opened_now.append(True)
        return await service.open_account(uow, body)

    status, opened = await _keyed(request, None, idempotency_key, body, open_it, 201)
    if not opened_now:
        # A replay of the key. The first answer carried the buyer's token; handing out another
        # to whoever repeats the request would mint a credential for anyone who saw the body.
        return JSONResponse(opened, status_code=status, headers={"Idempotent-Replayed": "true"})
    token = issue_token(
        runtime.settings,
        runtime.clock,
        subject=uuid.UUID(opened["buyer"]["user_id"]),
        account_id=uuid.UUID(opened["id"]),
    )
    return JSONResponse({**opened, "token": token}, status_code=status)


@router.get(
    "/accounts/{account_id}",
    summary="See an account and its people",
    response_model=schemas.AccountView,
    responses=READS,
)
async def get_account(account_id: uuid.UUID, door: Reader) -> JSONResponse:
    """For its admins and buyer (payers see invoices only, R8)."""
    return await door.answer(lambda uow: service.get_account(uow, door.caller, account_id))


# --- sign-in links for the portal (issue 16) ---------------------------------------------------


@router.post(
    "/sign-in-links",
    status_code=202,
    summary="Mail a one-time sign-in link to a person",
    response_model=schemas.SignInLinkAccepted,
    responses=problem_responses(400, 413, 422),
)
async def request_sign_in_links(
    body: schemas.SignInLinkRequest,
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Public: a link for each account where the address holds a role, mailed to that address
    only. The answer is the same for an unknown address."""
    portal_url = runtime_of(request).settings.portal_public_url

    async def request_them(uow: service.UnitOfWork) -> schemas.SignInLinkAccepted:
        return await service.request_sign_in_links(uow, body, portal_url=portal_url)

    status, answer = await _keyed(request, None, idempotency_key, body, request_them, 202)
    return JSONResponse(answer, status_code=status)


@router.post(
    "/sign-in-links/redemption",
    summary="Sign in with a mailed link (once, before it expires)",
    response_model=schemas.SignedIn,
    responses=problem_responses(400, 404, 409, 410, 413, 422),
)
async def redeem_sign_in_link(body: schemas.SignInLinkRedemption, request: Request) -> JSONResponse:
    """Public: the link's secret is the credential and works once, so this takes no
    Idempotency-Key (a replay would hand out a token again). 409 used, 410 expired."""
    runtime = runtime_of(request)
    async with runtime.pool.acquire() as conn, conn.transaction():
        signed_in = await service.redeem_sign_in_link(_unit_of_work(runtime, conn), body)
    token = issue_token(
        runtime.settings,
        runtime.clock,
        subject=signed_in.user_id,
        account_id=signed_in.account_id,
    )
    return _answer(signed_in.model_copy(update={"token": token}))


@router.post(
    "/accounts/{account_id}/users",
    status_code=201,
    summary="Add a user to the account",
    response_model=Person,
    responses=WRITES,
)
async def add_user(account_id: uuid.UUID, body: schemas.NewUser, door: Writer) -> JSONResponse:
    """R4: admins manage the account's users."""
    await door.authorize(account_id, service.ADMINS, "add users", "R4")
    return await door.write(body, lambda uow: service.add_user(uow, account_id, body), 201)


@router.put(
    "/accounts/{account_id}/primary-admin",
    summary="Hand the primary-admin role to another user",
    response_model=RolesChanged,
    responses=WRITES,
)
async def transfer_primary_admin(
    account_id: uuid.UUID, body: schemas.UserRef, door: Writer
) -> JSONResponse:
    """R3: the buyer hands the primary-admin role on and becomes a secondary admin."""
    await door.authorize(account_id, service.BUYER, "hand over the primary-admin role", "R3")
    return await door.write(
        body, lambda uow: service.transfer_primary_admin(uow, account_id, body.user_id)
    )


@router.post(
    "/accounts/{account_id}/secondary-admins",
    summary="Appoint a secondary admin",
    response_model=RolesChanged,
    responses=WRITES,
)
async def appoint_secondary_admin(
    account_id: uuid.UUID, body: schemas.UserRef, door: Writer
) -> JSONResponse:
    """R4: the primary admin appoints secondary admins."""
    await door.authorize(account_id, PRIMARY_ADMIN, "appoint secondary admins", "R4")
    return await door.write(
        body, lambda uow: service.appoint_secondary_admin(uow, account_id, body.user_id)
    )


@router.delete(
    "/accounts/{account_id}/secondary-admins/{user_id}",
    summary="Remove a secondary admin",
    response_model=RolesChanged,
    responses=WRITES,
)
async def remove_secondary_admin(
    account_id: uuid.UUID, user_id: uuid.UUID, door: Writer
) -> JSONResponse:
    """R4: the primary admin removes secondary admins."""
    await door.authorize(account_id, PRIMARY_ADMIN, "remove secondary admins", "R4")
    return await door.write(
        None, lambda uow: service.remove_secondary_admin(uow, account_id, user_id)
    )


@router.put(
    "/accounts/{account_id}/buyer",
    summary="Change the account's buyer (support only)",
    response_model=RolesChanged,
    responses=WRITES,
)
async def change_buyer(account_id: uuid.UUID, body: schemas.UserRef, door: Writer) -> JSONResponse:
    """R5: only support (an operator token) changes the buyer, never self-service."""
    await door.authorize(account_id, OPERATOR, "change the buyer", "R5")
    return await door.write(body, lambda uow: service.change_buyer(uow, account_id, body.user_id))


@router.put(
    "/accounts/{account_id}/billing-details",
    summary="Set the account's billing address, organisation number and VAT id",
    response_model=BillingIdentity,
    responses=WRITES,
)
async def change_billing_details(
    account_id: uuid.UUID, body: schemas.BillingDetails, door: Writer
) -> JSONResponse:
    """Issue 15, R2: the buyer's. Validated per country (a Norwegian organisation number's MOD11
    check digit, "NO" + number + "MVA", an EU VAT id's format); printed on documents issued from
    then on (invoicing hears ``BillingDetailsChanged``)."""
    await door.authorize(account_id, service.BUYER, "change the billing details", "R2, R8")
    return await door.write(body, lambda uow: service.change_billing_details(uow, account_id, body))


@router.post(
    "/accounts/{account_id}/payers",
    status_code=201,
    summary="Register a payer",
    response_model=RolesChanged,
    responses=WRITES,
)
async def add_payer(account_id: uuid.UUID, body: schemas.NewUser, door: Writer) -> JSONResponse:
    """R2, R6: the buyer registers payers, at most five; a sixth is refused, nothing changes."""
    await door.authorize(account_id, service.BUYER, "register payers", "R2, R6")
    return await door.write(body, lambda uow: service.add_payer(uow, account_id, body), 201)


@router.delete(
    "/accounts/{account_id}/payers/{user_id}",
    summary="Remove a payer",
    response_model=RolesChanged,
    responses=WRITES,
)
async def remove_payer(account_id: uuid.UUID, user_id: uuid.UUID, door: Writer) -> JSONResponse:
    """R2: payers are the buyer's."""
    await door.authorize(account_id, service.BUYER, "remove payers", "R2")
    return await door.write(None, lambda uow: service.remove_payer(uow, account_id, user_id))


# --- buying (R14-R17) -------------------------------------------------------------------------


@router.post(
    "/accounts/{account_id}/orders",
    status_code=201,
    summary="Place an order or start a trial",
    response_model=schemas.Order,
    responses=WRITES,
)
async def place_order(
    account_id: uuid.UUID, body: schemas.PlaceOrder, door: Writer
) -> JSONResponse:
    """A direct order (R16) or a trial (R17). Only the buyer orders (R2); R14 and R15 apply
    (R15 [ours]: to a direct order's list price as to a quote)."""
    who = door.caller
    await door.read(lambda uow: service.may_place_order(uow, who, account_id, body))
    return await door.write(body, lambda uow: service.place_order(uow, who, account_id, body), 201)


@router.post(
    "/accounts/{account_id}/orders/preview",
    summary="Preview an order's price and dates",
    response_model=schemas.OrderPreview,
    responses=WRITES,
)
async def preview_order(
    account_id: uuid.UUID, body: schemas.PlaceOrder, door: Reader
) -> JSONResponse:
    """R18-R20, R23: what placing this order now would cost (lines, VAT with its rate or the
    exemption, totals; a three-year term's first installment and whole term) and when its term
    would renew or expire, in the account's time zone. The same body as an order, the same
    refusals (R14, R15, R17, R34); it stores nothing, so it takes no Idempotency-Key."""
    who = door.caller
    await door.read(lambda uow: service.may_place_order(uow, who, account_id, body))
    return await door.answer(lambda uow: service.preview_order(uow, who, account_id, body))


@router.get(
    "/orders/{order_id}", summary="See an order", response_model=schemas.Order, responses=READS
)
async def get_order(order_id: uuid.UUID, door: Reader) -> JSONResponse:
    """An order is billing data: the buyer's (R8)."""
    return await door.answer(lambda uow: service.get_order(uow, door.caller, order_id))


@router.get(
    "/accounts/{account_id}/orders",
    summary="List the account's orders",
    response_model=schemas.Orders,
    responses=READS,
)
async def list_orders(account_id: uuid.UUID, door: Reader) -> JSONResponse:
    return await door.answer(lambda uow: service.list_orders(uow, door.caller, account_id))


@router.post(
    "/accounts/{account_id}/quotes",
    status_code=201,
    summary="Issue a quote for an account (partners)",
    response_model=schemas.Quote,
    responses=WRITES,
)
async def issue_quote(
    account_id: uuid.UUID, body: schemas.IssueQuote, door: Writer
) -> JSONResponse:
    """R16: a partner quotes for an account, priced from the list in the account's currency."""
    who = door.caller
    service.may_issue_quote(who, body)
    return await door.write(body, lambda uow: service.issue_quote(uow, who, account_id, body), 201)


@router.get(
    "/quotes/{quote_id}", summary="See a quote", response_model=schemas.Quote, responses=READS
)
async def get_quote(quote_id: uuid.UUID, door: Reader) -> JSONResponse:
    """The buyer, the issuing partner and support see a quote."""
    return await door.answer(lambda uow: service.get_quote(uow, door.caller, quote_id))


@router.post(
    "/quotes/{quote_id}/acceptance",
    status_code=201,
    summary="Accept a partner's quote",
    response_model=schemas.Order,
    responses=WRITES,
)
async def accept_quote(
    quote_id: uuid.UUID, body: schemas.AcceptQuote, door: Writer
) -> JSONResponse:
    """R16: the buyer accepts and pays the vendor directly; R14 allows invoice; R15 applies."""
    who = door.caller
    await door.read(lambda uow: service.quote_for_buyer(uow, who, quote_id))
    return await door.write(body, lambda uow: service.accept_quote(uow, who, quote_id, body), 201)


# --- subscriptions: reads, conversion, changes, renewals, refunds ------------------------------


@router.get(
    "/accounts/{account_id}/subscriptions",
    summary="List the account's subscriptions",
    response_model=schemas.Subscriptions,
    responses=READS,
)
async def list_subscriptions(account_id: uuid.UUID, door: Reader) -> JSONResponse:
    """Renewal data is the buyer's (R8)."""
    return await door.answer(lambda uow: service.list_subscriptions(uow, door.caller, account_id))


@router.get(
    "/subscriptions/{subscription_id}",
    summary="See a subscription",
    response_model=schemas.Subscription,
    responses=READS,
)
async def get_subscription(subscription_id: uuid.UUID, door: Reader) -> JSONResponse:
    return await door.answer(
        lambda uow: service.get_subscription(uow, door.caller, subscription_id)
    )


@router.post(
    "/subscriptions/{subscription_id}/conversion",
    status_code=201,
    summary="Convert a trial into a paid subscription",
    response_model=schemas.Order,
    responses=WRITES,
)
async def convert_trial(
    subscription_id: uuid.UUID, body: schemas.ConvertTrial, door: Writer
) -> JSONResponse:
    """R17: the trial becomes a paid subscription in place: same subscription id."""
    who = door.caller
    await door.read(lambda uow: service.may_convert_trial(uow, who, subscription_id, body))
    return await door.write(
        body, lambda uow: service.convert_trial(uow, who, subscription_id, body), 201
    )


@router.put(
    "/subscriptions/{subscription_id}/auto-renew",
    summary="Turn auto-renew on or off",
    response_model=schemas.Subscription,
    responses=WRITES,
)
async def set_auto_renew(
    subscription_id: uuid.UUID, body: schemas.SetAutoRenew, door: Writer
) -> JSONResponse:
    """R24: turning auto-renew off cancels at the expiry date (full access until then)."""
    await door.buyers(subscription_id, "change auto-renew", "R2, R24")
    return await door.write(body, lambda uow: service.set_auto_renew(uow, subscription_id, body))


@router.put(
    "/subscriptions/{subscription_id}/payment-method",
    summary="Choose how the subscription renews (a saved card or PayPal, or invoice)",
    response_model=schemas.Subscription,
    responses=WRITES,
)
async def change_renewal_payment_method(
    subscription_id: uuid.UUID, body: schemas.ChangeRenewalPaymentMethod, door: Writer
) -> JSONResponse:
    """R14: pay-by-invoice from 2024-09-16 only with another subscription paid by invoice
    (else through a partner quote); a card or PayPal renewal names a saved method (R2)."""
    await door.buyers(subscription_id, "change the payment method", "R2, R14")
    return await door.write(
        body, lambda uow: service.change_renewal_payment_method(uow, subscription_id, body)
    )


@router.put(
    "/subscriptions/{subscription_id}/term-change",
    summary="Change the term from the next renewal",
    response_model=schemas.Subscription,
    responses=WRITES,
)
async def change_term(
    subscription_id: uuid.UUID, body: schemas.ChangeTerm, door: Writer
) -> JSONResponse:
    """R28: the new term takes effect at the next renewal; changeable or withdrawn until then."""
    await door.buyers(subscription_id, "change the term", "R2, R28")
    return await door.write(body, lambda uow: service.change_term(uow, subscription_id, body))


@router.put(
    "/subscriptions/{subscription_id}/product-switch",
    summary="Switch product from the next renewal",
    response_model=schemas.Subscription,
    responses=WRITES,
)
async def switch_product(
    subscription_id: uuid.UUID, body: schemas.SwitchProduct, door: Writer
) -> JSONResponse:
    """R29: only in the renewal window, only if bought or renewed after 2024-09-16."""
    await door.buyers(subscription_id, "switch products", "R2, R29")
    return await door.write(body, lambda uow: service.switch_product(uow, subscription_id, body))


@router.post(
    "/subscriptions/{subscription_id}/seats",
    status_code=201,
    summary="Add licences to a subscription",
    response_model=schemas.SeatsOrder,
    responses=WRITES,
)
async def add_seats(
    subscription_id: uuid.UUID, body: schemas.AddSeats, door: Writer
) -> JSONResponse:
    """R30: licences added are co-termed with the subscription, priced pro rata by days."""
    await door.buyers(subscription_id, "add licences", "R2, R30")
    who = door.caller
    return await door.write(
        body, lambda uow: service.add_seats(uow, who, subscription_id, body), 201
    )


@router.post(
    "/subscriptions/{subscription_id}/renewals",
    status_code=201,
    summary="Renew a subscription now",
    response_model=schemas.Renewal,
    responses=WRITES,
)
async def request_renewal(
    subscription_id: uuid.UUID, body: schemas.RequestRenewal, door: Writer
) -> JSONResponse:
    """R26, R27: a manual renewal from 90 days before the renewal date, or a late one after it
    (45 days annual/three-year, 30 days monthly). Pending term or product changes apply."""
    await door.buyers(subscription_id, "renew", "R2, R27")
    who = door.caller
    return await door.write(
        body, lambda uow: service.request_renewal(uow, who, subscription_id, body), 201
    )


@router.post(
    "/subscriptions/{subscription_id}/refunds",
    status_code=201,
    summary="Ask for a refund",
    response_model=schemas.Refund,
    responses=WRITES,
)
async def request_refund(
    subscription_id: uuid.UUID, body: schemas.RequestRefund, door: Writer
) -> JSONResponse:
    """R38: direct purchases only, inside 15 (monthly) or 30 days (annual, three-year) of the
    purchase or renewal, never for non-refundable products. R39: access ends at once."""
    await door.buyers(subscription_id, "request refunds", "R2, R38")
    who = door.caller
    return await door.write(
        body, lambda uow: service.request_refund(uow, who, subscription_id, body), 201
    )
