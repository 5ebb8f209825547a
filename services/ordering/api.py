"""Ordering's HTTP door: accounts and roles, orders and quotes, subscription changes, refunds.

Access (R8): a bearer token only says who calls; the account's roles (``account_people``) say
what the caller may do, at request time. A stranger to the account gets 404, a member without
the role 403. Operators (support) read everything and change the buyer (R5); they do not act in
the customer's name. Partners (``kind=partner``, subject = partner id) issue quotes for an
account whose id the customer gave them; only that account's buyer can accept the quote, and a
partner reads only its own quotes.

Every write takes an ``Idempotency-Key``; the answer to a key is stored with the write it
describes, so a repeat returns it and creates nothing; a refused request stores nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StrictBool, StrictInt

from shared import people
from shared.auth import Principal, issue_token, verify_token
from shared.contracts import (
    AccountOpened,
    AutoRenewChanged,
    Language,
    OrderPlaced,
    PaymentMethod,
    Person,
    ProductSwitchScheduled,
    QuoteIssued,
    RefundApproved,
    RenewalRequested,
    SeatsAdded,
    Term,
    TermChangeScheduled,
    TrialConverted,
)
from shared.db import Conn
from shared.idempotency import check_key, request_fingerprint, run_once
from shared.problems import Problem, not_found
from shared.runtime import Runtime, as_json, runtime_of
from shared.time.test_clocks import attach_account

from . import domain, repository

MAX_BODY_BYTES = 16 * 1024
MEMBER_ROLES = {"buyer", "primary_admin", "secondary_admin", "payer"}
ADMINS = {"primary_admin", "secondary_admin"}


class BoundedBodyRoute(APIRoute):
    """Refuses bodies above ``MAX_BODY_BYTES`` (413) before they are read whole or parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise _too_large()
            if request.method in ("POST", "PUT", "PATCH", "DELETE"):
                body = bytearray()
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise _too_large()
                request._body = bytes(body)
            return await handler(request)

        return bounded


def _too_large() -> Problem:
    return Problem(
        413,
        "body-too-large",
        "Request body too large",
        f"A request body may have at most {MAX_BODY_BYTES} bytes.",
        limit_bytes=MAX_BODY_BYTES,
    )


router = APIRouter(prefix="/v1", tags=["ordering"], route_class=BoundedBodyRoute)


# --- request bodies ---------------------------------------------------------------------------


def _no_control_characters(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (CR, LF, ...)")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_control_characters)]
Email = Annotated[EmailStr, Field(max_length=254), AfterValidator(_no_control_characters)]
Seats = Annotated[StrictInt, Field(gt=0, le=domain.MAX_SEATS)]
OfferingCode = Annotated[str, Field(min_length=1, max_length=64)]
PaymentToken = Annotated[str, Field(pattern=r"^tok_[A-Za-z0-9_]{1,60}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(Strict):
    email: Email
    name: Name
    language: Language | None = None


class OpenAccount(Strict):
    name: Name
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2 billing country")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency")
    language: Language = "en"
    time_zone: str = Field(max_length=64, description="IANA time zone, e.g. Europe/Oslo")
    tax_exempt_reason: Name | None = None
    buyer: NewUser
    test_clock_id: uuid.UUID | None = Field(
        None, description="Operators only, when test clocks are enabled: the account follows it"
    )


class UserRef(Strict):
    user_id: uuid.UUID


class PlaceOrder(Strict):
    offering: OfferingCode
    term: Term
    seats: Seats
    payment_method: PaymentMethod
    auto_renew: StrictBool = True
    trial: StrictBool = Field(False, description="R17: start a trial, converted in place later")
    payment_token: PaymentToken | None = None


class IssueQuote(Strict):
    offering: OfferingCode
    term: Term
    seats: Seats
    valid_until: date | None = Field(None, description="[ours] default 30 days, at most 90")


class AcceptQuote(Strict):
    payment_method: PaymentMethod
    auto_renew: StrictBool = True
    payment_token: PaymentToken | None = None


class ConvertTrial(Strict):
    term: Term | None = None
    seats: Seats | None = None
    payment_method: PaymentMethod
    payment_token: PaymentToken | None = None


class SetAutoRenew(Strict):
    auto_renew: StrictBool


class ChangeTerm(Strict):
    new_term: Term | None = Field(description="null withdraws a pending change (R28)")


class SwitchProduct(Strict):
    new_offering: OfferingCode | None = Field(description="null withdraws a pending switch (R29)")


class AddSeats(Strict):
    seats: Seats
    payment_token: PaymentToken | None = None


class RequestRenewal(Strict):
    payment_method: PaymentMethod | None = None
    payment_token: PaymentToken | None = None


class RequestRefund(Strict):
    reason: Name


# --- access -----------------------------------------------------------------------------------


def principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    rt = runtime_of(request)
    return verify_token(rt.settings, rt.clock, authorization)


Caller = Annotated[Principal, Depends(principal)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


async def acting(
    rt: Runtime, who: Principal, account_id: uuid.UUID, allowed: set[str], what: str, rule: str
) -> set[str]:
    """404 for a stranger, 403 for a member (or operator) without one of ``allowed``."""
    held = await people.require_role(rt.pool, who, account_id, MEMBER_ROLES, "account")
    domain.check_actor(held, allowed, what, rule)
    return held


Work = Callable[[Conn], Awaitable[tuple[int, dict[str, Any]]]]


async def once(
    request: Request, who: Principal | None, key: str | None, body: BaseModel | None, work: Work
) -> JSONResponse:
    status, answer = await run_keyed(request, who, key, body, work)
    return JSONResponse(answer, status_code=status)


async def run_keyed(
    request: Request, who: Principal | None, key: str | None, body: BaseModel | None, work: Work
) -> tuple[int, dict[str, Any]]:
    """Run ``work`` once per (caller, key); the same key with another body is refused (422)."""
    rt = runtime_of(request)
    checked = check_key(key)
    payload = body.model_dump(mode="json") if body is not None else {}
    fingerprint = request_fingerprint(request.method, request.url.path, payload)
    scope = f"ordering:{who.kind}:{who.subject}" if who else "ordering:public"
    return await run_once(rt.pool, scope=scope, key=checked, fingerprint=fingerprint, work=work)


async def _now(rt: Runtime, conn: Conn, account_id: uuid.UUID) -> datetime:
    """Now for this account: its test clock's time when it follows one (DESIGN.md, "Time")."""
    return (await rt.clock_for(conn, account_id)).now()


def _person(row: asyncpg.Record) -> Person:
    return Person(user_id=row["id"], email=row["email"], name=row["name"], language=row["language"])


def _check_may_attach_test_clock(rt: Runtime, authorization: str | None) -> None:
    if not rt.settings.test_clocks_enabled:
        raise Problem(
            422,
            "test-clocks-disabled",
            "Test clocks are disabled",
            "Set PLATFORM_TEST_CLOCKS_ENABLED=true on every service to use test clocks.",
            errors=[{"field": "test_clock_id", "message": "test clocks are disabled"}],
        )
    if verify_token(rt.settings, rt.clock, authorization).kind != "operator":
        raise Problem(
            403,
            "operator-only",
            "Operators only",
            "Only an operator attaches an account to a test clock.",
        )


async def _test_clock_time(conn: Conn, clock_id: uuid.UUID) -> datetime:
    now = await conn.fetchval("SELECT now FROM test_clock_times WHERE clock_id = $1", clock_id)
    if now is None:
        raise Problem(
            409,
            "test-clock-unknown",
            "Test clock not known (yet)",
            "Create the clock on lifecycle and wait until it is ready, then try again.",
            errors=[{"field": "test_clock_id", "message": "unknown test clock"}],
        )
    assert isinstance(now, datetime)
    return now


# --- accounts and roles (R1-R6) ---------------------------------------------------------------


@router.post("/accounts", status_code=201)
async def open_account(
    body: OpenAccount, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Open an account; its first user becomes buyer and primary admin (R1). Public."""
    rt = runtime_of(request)
    domain.check_account_fields(body.country, body.currency, body.time_zone)
    if body.test_clock_id is not None:
        _check_may_attach_test_clock(rt, request.headers.get("authorization"))

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account_id, user_id = uuid.uuid4(), uuid.uuid4()
        now = rt.clock.now()
        if body.test_clock_id is not None:
            now = await _test_clock_time(conn, body.test_clock_id)
            await attach_account(conn, account_id, body.test_clock_id)
        account = {
            "id": account_id,
            "name": body.name,
            "country": body.country,
            "currency": body.currency,
            "language": body.language,
            "time_zone": body.time_zone,
            "tax_exempt_reason": body.tax_exempt_reason,
            "test_clock_id": body.test_clock_id,
            "opened_at": now,
        }
        await repository.insert_account(conn, account)
        language = body.buyer.language or body.language
        await repository.insert_user(
            conn,
            user_id=user_id,
            account_id=account_id,
            email=body.buyer.email,
            name=body.buyer.name,
            language=language,
            created_at=now,
        )
        buyer = Person(
            user_id=user_id, email=body.buyer.email, name=body.buyer.name, language=language
        )
        snapshot = domain.snapshot(domain.first_roles(user_id), {user_id: buyer})
        await people.apply_snapshot(conn, account_id, snapshot)
        opened = AccountOpened(
            name=body.name,
            country=body.country,
            currency=body.currency,
            language=body.language,
            time_zone=body.time_zone,
            tax_exempt_reason=body.tax_exempt_reason,
            test_clock_id=body.test_clock_id,
        )
        await rt.outbox.emit(conn, opened, account_id=account_id)
        await rt.outbox.emit(conn, snapshot, account_id=account_id)
        return 201, as_json(
            {**account, "buyer": buyer.model_dump(), "roles": ["buyer", "primary_admin"]}
        )

    status, opened = await run_keyed(request, None, idempotency_key, body, work)
    token = issue_token(
        rt.settings,
        rt.clock,
        subject=uuid.UUID(opened["buyer"]["user_id"]),
        account_id=uuid.UUID(opened["id"]),
    )
    return JSONResponse({**opened, "token": token}, status_code=status)


@router.get("/accounts/{account_id}")
async def get_account(account_id: uuid.UUID, request: Request, who: Caller) -> dict[str, Any]:
    """The account and its people: for its admins and buyer (payers see invoices only, R8)."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"buyer", *ADMINS, "operator"}, "see the account", "R8")
    account = await repository.get_account(rt.pool, account_id)
    if account is None:
        raise not_found("account")
    members = await repository.people(rt.pool, account_id)
    users = await repository.users(rt.pool, account_id)
    return as_json(  # type: ignore[no-any-return]
        {**dict(account), "people": [dict(m) for m in members], "users": [dict(u) for u in users]}
    )


@router.post("/accounts/{account_id}/users", status_code=201)
async def add_user(
    account_id: uuid.UUID,
    body: NewUser,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R4: admins manage the account's users."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, ADMINS, "add users", "R4")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.lock_account(conn, account_id)
        if account is None:
            raise not_found("account")
        if await repository.user_by_email(conn, account_id, body.email):
            raise Problem(
                409, "user-exists", "User exists", "A user with that e-mail already exists."
            )
        user_id = uuid.uuid4()
        language = body.language or account["language"]
        await repository.insert_user(
            conn,
            user_id=user_id,
            account_id=account_id,
            email=body.email,
            name=body.name,
            language=language,
            created_at=await _now(rt, conn, account_id),
        )
        person = Person(user_id=user_id, email=body.email, name=body.name, language=language)
        return 201, as_json(person.model_dump())

    return await once(request, who, idempotency_key, body, work)


RoleChange = Callable[[domain.Roles, dict[uuid.UUID, Person]], domain.Roles]


async def _change_roles(
    rt: Runtime, conn: Conn, account_id: uuid.UUID, change: RoleChange, status: int = 200
) -> tuple[int, dict[str, Any]]:
    """Apply one role change under the account's lock; publish the full snapshot if it changed."""
    if await repository.lock_account(conn, account_id) is None:
        raise not_found("account")
    current = domain.roles_from_rows(
        (r["user_id"], r["roles"]) for r in await repository.role_rows(conn, account_id)
    )
    users = {r["id"]: _person(r) for r in await repository.users(conn, account_id)}
    changed = change(current, users)
    snapshot = domain.snapshot(changed, users)
    if changed != current:
        await people.apply_snapshot(conn, account_id, snapshot)
        await rt.outbox.emit(conn, snapshot, account_id=account_id)
    return status, as_json(snapshot.model_dump(mode="json"))


def _user_of_account(users: dict[uuid.UUID, Person], user_id: uuid.UUID) -> uuid.UUID:
    if user_id not in users:
        raise Problem(404, "not-found", "Not found", "No user with that id in this account.")
    return user_id


@router.put("/accounts/{account_id}/primary-admin")
async def transfer_primary_admin(
    account_id: uuid.UUID,
    body: UserRef,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R3: the buyer hands the primary-admin role on and becomes a secondary admin."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"buyer"}, "hand over the primary-admin role", "R3")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        return await _change_roles(
            rt,
            conn,
            account_id,
            lambda roles, users: domain.transfer_primary_admin(
                roles, _user_of_account(users, body.user_id)
            ),
        )

    return await once(request, who, idempotency_key, body, work)


@router.post("/accounts/{account_id}/secondary-admins")
async def appoint_secondary_admin(
    account_id: uuid.UUID,
    body: UserRef,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R4: the primary admin appoints secondary admins."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"primary_admin"}, "appoint secondary admins", "R4")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        return await _change_roles(
            rt,
            conn,
            account_id,
            lambda roles, users: domain.appoint_secondary_admin(
                roles, _user_of_account(users, body.user_id)
            ),
        )

    return await once(request, who, idempotency_key, body, work)


@router.delete("/accounts/{account_id}/secondary-admins/{user_id}")
async def remove_secondary_admin(
    account_id: uuid.UUID,
    user_id: uuid.UUID,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R4: the primary admin removes secondary admins."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"primary_admin"}, "remove secondary admins", "R4")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        return await _change_roles(
            rt, conn, account_id, lambda roles, _: domain.remove_secondary_admin(roles, user_id)
        )

    return await once(request, who, idempotency_key, None, work)


@router.put("/accounts/{account_id}/buyer")
async def change_buyer(
    account_id: uuid.UUID,
    body: UserRef,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R5: only support (an operator token) changes the buyer, never self-service."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"operator"}, "change the buyer", "R5")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        return await _change_roles(
            rt,
            conn,
            account_id,
            lambda roles, users: domain.change_buyer(roles, _user_of_account(users, body.user_id)),
        )

    return await once(request, who, idempotency_key, body, work)


@router.post("/accounts/{account_id}/payers", status_code=201)
async def add_payer(
    account_id: uuid.UUID,
    body: NewUser,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R2, R6: the buyer registers payers, at most five; a sixth is refused, nothing changes."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"buyer"}, "register payers", "R2, R6")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.lock_account(conn, account_id)
        if account is None:
            raise not_found("account")
        existing = await repository.user_by_email(conn, account_id, body.email)
        if existing is None:
            payer_id = uuid.uuid4()
            await repository.insert_user(
                conn,
                user_id=payer_id,
                account_id=account_id,
                email=body.email,
                name=body.name,
                language=body.language or account["language"],
                created_at=await _now(rt, conn, account_id),
            )
        else:
            payer_id = existing["id"]
        return await _change_roles(
            rt, conn, account_id, lambda roles, _: domain.add_payer(roles, payer_id), status=201
        )

    return await once(request, who, idempotency_key, body, work)


@router.delete("/accounts/{account_id}/payers/{user_id}")
async def remove_payer(
    account_id: uuid.UUID,
    user_id: uuid.UUID,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R2: payers are the buyer's."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"buyer"}, "remove payers", "R2")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        return await _change_roles(
            rt, conn, account_id, lambda roles, _: domain.remove_payer(roles, user_id)
        )

    return await once(request, who, idempotency_key, None, work)


# --- buying (R14-R17) -------------------------------------------------------------------------


async def _sell(
    rt: Runtime,
    conn: Conn,
    *,
    account: asyncpg.Record,
    buyer_id: uuid.UUID,
    offering: str,
    term: Term,
    seats: int,
    payment_method: PaymentMethod,
    channel: Literal["direct", "partner"],
    auto_renew: bool,
    trial: bool,
    quote_id: uuid.UUID | None,
    payment_token: str | None,
) -> dict[str, Any]:
    """A new subscription: the order, ordering's subscription row and OrderPlaced."""
    buyer = await repository.user(conn, account["id"], buyer_id)
    if buyer is None:
        raise not_found("account")
    now = await _now(rt, conn, account["id"])
    order: dict[str, Any] = {
        "id": uuid.uuid4(),
        "order_number": domain.order_number(await repository.next_order_number(conn)),
        "account_id": account["id"],
        "placed_by": buyer_id,
        "subscription_id": uuid.uuid4(),
        "offering": offering,
        "term": term,
        "seats": seats,
        "payment_method": payment_method,
        "channel": channel,
        "auto_renew": auto_renew,
        "placed_at": now,
        "kind": "trial" if trial else "purchase",
        "quote_id": quote_id,
    }
    await repository.insert_order(conn, order)
    await repository.insert_subscription(
        conn,
        {
            "id": order["subscription_id"],
            "account_id": account["id"],
            "offering": offering,
            "term": term,
            "seats": seats,
            "payment_method": payment_method,
            "channel": channel,
            "auto_renew": auto_renew,
            "trial": trial,
            "time_zone": account["time_zone"],
            "purchased_at": now,
        },
    )
    placed = OrderPlaced(
        order_id=order["id"],
        order_number=order["order_number"],
        subscription_id=order["subscription_id"],
        offering=offering,
        term=term,
        seats=seats,
        payment_method=payment_method,
        channel=channel,
        billing_country=account["country"],
        currency=account["currency"],
        time_zone=account["time_zone"],
        placed_at=now,
        auto_renew=auto_renew,
        buyer_email=buyer["email"],
        quote_id=quote_id,
        trial=trial,
        payment_token=payment_token,
    )
    await rt.outbox.emit(
        conn, placed, account_id=account["id"], subscription_id=order["subscription_id"]
    )
    return order


@router.post("/accounts/{account_id}/orders", status_code=201)
async def place_order(
    account_id: uuid.UUID,
    body: PlaceOrder,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """A direct order (R16) or a trial (R17). Only the buyer orders (R2); R14 and R15 apply
    (R15 [ours]: to a direct order's list price as to a quote)."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"buyer"}, "place orders", "R2")
    domain.check_offering(body.offering, body.term)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.lock_account(conn, account_id)
        if account is None:
            raise not_found("account")
        if not body.trial:  # a trial is not charged; R14/R15 apply when it converts
            price = domain.price(body.offering, body.term, body.seats, account["currency"])
            domain.check_payment_method(
                body.payment_method,
                via_partner_quote=False,
                has_invoice_subscription=await repository.has_invoice_subscription(
                    conn, account_id
                ),
                usd_value=price.usd_value,
                prepay_only=account["prepay_only"],
            )
        order = await _sell(
            rt,
            conn,
            account=account,
            buyer_id=who.subject,
            offering=body.offering,
            term=body.term,
            seats=body.seats,
            payment_method=body.payment_method,
            channel="direct",
            auto_renew=body.auto_renew,
            trial=body.trial,
            quote_id=None,
            payment_token=body.payment_token,
        )
        return 201, as_json(order)

    return await once(request, who, idempotency_key, body, work)


@router.get("/orders/{order_id}")
async def get_order(order_id: uuid.UUID, request: Request, who: Caller) -> dict[str, Any]:
    """An order is billing data: the buyer's (R8)."""
    rt = runtime_of(request)
    order = await repository.get_order(rt.pool, order_id)
    if order is None:
        raise not_found("order")
    await acting(rt, who, order["account_id"], {"buyer", "operator"}, "see orders", "R8")
    return as_json(dict(order))  # type: ignore[no-any-return]


@router.get("/accounts/{account_id}/orders")
async def list_orders(account_id: uuid.UUID, request: Request, who: Caller) -> dict[str, Any]:
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"buyer", "operator"}, "see orders", "R8")
    orders = await repository.list_orders(rt.pool, account_id)
    return {"items": as_json([dict(o) for o in orders])}


@router.post("/accounts/{account_id}/quotes", status_code=201)
async def issue_quote(
    account_id: uuid.UUID,
    body: IssueQuote,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R16: a partner quotes for an account, priced from the list in the account's currency."""
    rt = runtime_of(request)
    if who.kind != "partner":
        raise Problem(403, "partner-only", "Partners only", "Quotes are issued by partners (R16).")
    domain.check_offering(body.offering, body.term)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.get_account(conn, account_id)
        if account is None:
            raise not_found("account")
        now = await _now(rt, conn, account_id)
        price = domain.price(body.offering, body.term, body.seats, account["currency"])
        quote: dict[str, Any] = {
            "id": uuid.uuid4(),
            "quote_number": domain.quote_number(await repository.next_quote_number(conn)),
            "account_id": account_id,
            "partner_id": who.subject,
            "offering": body.offering,
            "term": body.term,
            "seats": body.seats,
            "currency": price.currency,
            "net_amount": price.net_amount,
            "usd_value": price.usd_value,
            "valid_until": domain.quote_valid_until(body.valid_until, now, account["time_zone"]),
            "issued_at": now,
        }
        await repository.insert_quote(conn, quote)
        issued = QuoteIssued(
            quote_id=quote["id"],
            quote_number=quote["quote_number"],
            partner_id=who.subject,
            offering=body.offering,
            term=body.term,
            seats=body.seats,
            currency=price.currency,
            net_amount=price.net_amount,
            valid_until=quote["valid_until"],
        )
        await rt.outbox.emit(conn, issued, account_id=account_id)
        return 201, as_json({**quote, "accepted_at": None, "order_id": None})

    return await once(request, who, idempotency_key, body, work)


async def _visible_quote(rt: Runtime, who: Principal, quote_id: uuid.UUID) -> asyncpg.Record:
    quote = await repository.get_quote(rt.pool, quote_id)
    if quote is None:
        raise not_found("quote")
    if who.kind == "partner":
        if quote["partner_id"] != who.subject:
            raise not_found("quote")
        return quote
    await acting(rt, who, quote["account_id"], {"buyer", "operator"}, "see quotes", "R8")
    return quote


@router.get("/quotes/{quote_id}")
async def get_quote(quote_id: uuid.UUID, request: Request, who: Caller) -> dict[str, Any]:
    """The buyer, the issuing partner and support see a quote."""
    return as_json(dict(await _visible_quote(runtime_of(request), who, quote_id)))  # type: ignore[no-any-return]


@router.post("/quotes/{quote_id}/acceptance", status_code=201)
async def accept_quote(
    quote_id: uuid.UUID,
    body: AcceptQuote,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R16: the buyer accepts and pays the vendor directly; R14 allows invoice; R15 applies."""
    rt = runtime_of(request)
    quote = await repository.get_quote(rt.pool, quote_id)
    if quote is None:
        raise not_found("quote")
    await acting(rt, who, quote["account_id"], {"buyer"}, "accept quotes", "R16")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.lock_account(conn, quote["account_id"])
        locked = await repository.get_quote(conn, quote_id, lock=True)
        if account is None or locked is None:
            raise not_found("quote")
        domain.check_quote_acceptable(
            locked["valid_until"],
            locked["accepted_at"] is not None,
            await _now(rt, conn, account["id"]),
            account["time_zone"],
        )
        domain.check_payment_method(
            body.payment_method,
            via_partner_quote=True,
            has_invoice_subscription=False,
            usd_value=locked["usd_value"],
            prepay_only=account["prepay_only"],
        )
        order = await _sell(
            rt,
            conn,
            account=account,
            buyer_id=who.subject,
            offering=locked["offering"],
            term=locked["term"],
            seats=locked["seats"],
            payment_method=body.payment_method,
            channel="partner",
            auto_renew=body.auto_renew,
            trial=False,
            quote_id=quote_id,
            payment_token=body.payment_token,
        )
        await repository.mark_quote_accepted(conn, quote_id, order["id"], order["placed_at"])
        return 201, as_json(order)

    return await once(request, who, idempotency_key, body, work)


# --- subscriptions: reads, conversion, changes, renewals, refunds ------------------------------


def _subscription(row: asyncpg.Record) -> domain.Subscription:
    return domain.Subscription(
        id=row["id"],
        offering=row["offering"],
        term=row["term"],
        seats=row["seats"],
        payment_method=row["payment_method"],
        channel=row["channel"],
        auto_renew=row["auto_renew"],
        trial=row["trial"],
        stage=row["stage"],
        time_zone=row["time_zone"],
        purchased_at=row["purchased_at"],
        purchase_kind=row["purchase_kind"],
        renews_at=row["renews_at"],
        expires_at=row["expires_at"],
        refunded_at=row["refunded_at"],
    )


async def _buyers_subscription(
    rt: Runtime, who: Principal, subscription_id: uuid.UUID, what: str, rule: str
) -> asyncpg.Record:
    row = await repository.get_subscription(rt.pool, subscription_id)
    if row is None:
        raise not_found("subscription")
    await acting(rt, who, row["account_id"], {"buyer"}, what, rule)
    return row


async def _locked(conn: Conn, subscription_id: uuid.UUID) -> asyncpg.Record:
    row = await repository.get_subscription(conn, subscription_id, lock=True)
    if row is None:
        raise not_found("subscription")
    return row


@router.get("/accounts/{account_id}/subscriptions")
async def list_subscriptions(
    account_id: uuid.UUID, request: Request, who: Caller
) -> dict[str, Any]:
    """Renewal data is the buyer's (R8)."""
    rt = runtime_of(request)
    await acting(rt, who, account_id, {"buyer", "operator"}, "see subscriptions", "R8")
    rows = await repository.list_subscriptions(rt.pool, account_id)
    return {"items": as_json([dict(r) for r in rows])}


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(
    subscription_id: uuid.UUID, request: Request, who: Caller
) -> dict[str, Any]:
    rt = runtime_of(request)
    row = await repository.get_subscription(rt.pool, subscription_id)
    if row is None:
        raise not_found("subscription")
    await acting(rt, who, row["account_id"], {"buyer", "operator"}, "see subscriptions", "R8")
    return as_json(dict(row))  # type: ignore[no-any-return]


@router.post("/subscriptions/{subscription_id}/conversion", status_code=201)
async def convert_trial(
    subscription_id: uuid.UUID,
    body: ConvertTrial,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R17: the trial becomes a paid subscription in place: same subscription id."""
    rt = runtime_of(request)
    row = await _buyers_subscription(rt, who, subscription_id, "convert trials", "R17")
    if body.term is not None:
        domain.check_offering(row["offering"], body.term)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.lock_account(conn, row["account_id"])
        sub = _subscription(await _locked(conn, subscription_id))
        assert account is not None
        domain.check_convertible(sub)
        term, seats = body.term or sub.term, body.seats or sub.seats
        price = domain.price(sub.offering, term, seats, account["currency"])
        domain.check_payment_method(
            body.payment_method,
            via_partner_quote=sub.channel == "partner",
            has_invoice_subscription=await repository.has_invoice_subscription(conn, account["id"]),
            usd_value=price.usd_value,
            prepay_only=account["prepay_only"],
        )
        now = await _now(rt, conn, account["id"])
        order = await _follow_up_order(
            conn, row, who.subject, "conversion", seats, body.payment_method, now, term=term
        )
        await repository.update_subscription(
            conn,
            subscription_id,
            trial=False,
            term=term,
            seats=seats,
            payment_method=body.payment_method,
            purchased_at=now,
            purchase_kind="order",
        )
        converted = TrialConverted(
            order_id=order["id"],
            order_number=order["order_number"],
            term=term,
            seats=seats,
            payment_method=body.payment_method,
            converted_at=now,
            payment_token=body.payment_token,
        )
        await rt.outbox.emit(
            conn, converted, account_id=account["id"], subscription_id=subscription_id
        )
        return 201, as_json(order)

    return await once(request, who, idempotency_key, body, work)


async def _follow_up_order(
    conn: Conn,
    row: asyncpg.Record,
    buyer_id: uuid.UUID,
    kind: str,
    seats: int,
    payment_method: str,
    now: Any,
    term: str | None = None,
) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": uuid.uuid4(),
        "order_number": domain.order_number(await repository.next_order_number(conn)),
        "account_id": row["account_id"],
        "placed_by": buyer_id,
        "subscription_id": row["id"],
        "offering": row["offering"],
        "term": term or row["term"],
        "seats": seats,
        "payment_method": payment_method,
        "channel": row["channel"],
        "auto_renew": row["auto_renew"],
        "placed_at": now,
        "kind": kind,
        "quote_id": None,
    }
    await repository.insert_order(conn, order)
    return order


@router.put("/subscriptions/{subscription_id}/auto-renew")
async def set_auto_renew(
    subscription_id: uuid.UUID,
    body: SetAutoRenew,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R24: turning auto-renew off cancels at the expiry date (full access until then)."""
    rt = runtime_of(request)
    row = await _buyers_subscription(rt, who, subscription_id, "change auto-renew", "R2, R24")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        sub = _subscription(await _locked(conn, subscription_id))
        domain.check_auto_renew_change(sub)
        if sub.auto_renew != body.auto_renew:
            now = await _now(rt, conn, row["account_id"])
            await repository.update_subscription(conn, subscription_id, auto_renew=body.auto_renew)
            await rt.outbox.emit(
                conn,
                AutoRenewChanged(auto_renew=body.auto_renew, changed_at=now),
                account_id=row["account_id"],
                subscription_id=subscription_id,
            )
        return 200, await _subscription_answer(conn, subscription_id)

    return await once(request, who, idempotency_key, body, work)


async def _subscription_answer(conn: Conn, subscription_id: uuid.UUID) -> dict[str, Any]:
    return as_json(dict(await _locked(conn, subscription_id)))  # type: ignore[no-any-return]


@router.put("/subscriptions/{subscription_id}/term-change")
async def change_term(
    subscription_id: uuid.UUID,
    body: ChangeTerm,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R28: the new term takes effect at the next renewal; changeable or withdrawn until then."""
    rt = runtime_of(request)
    row = await _buyers_subscription(rt, who, subscription_id, "change the term", "R2, R28")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        sub = _subscription(await _locked(conn, subscription_id))
        effective_at = domain.term_change_effective_at(
            sub, body.new_term, await _now(rt, conn, row["account_id"])
        )
        await repository.update_subscription(conn, subscription_id, pending_term=body.new_term)
        await rt.outbox.emit(
            conn,
            TermChangeScheduled(new_term=body.new_term, effective_at=effective_at),
            account_id=row["account_id"],
            subscription_id=subscription_id,
        )
        return 200, await _subscription_answer(conn, subscription_id)

    return await once(request, who, idempotency_key, body, work)


@router.put("/subscriptions/{subscription_id}/product-switch")
async def switch_product(
    subscription_id: uuid.UUID,
    body: SwitchProduct,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R29: only in the renewal window, only if bought or renewed after 2024-09-16."""
    rt = runtime_of(request)
    row = await _buyers_subscription(rt, who, subscription_id, "switch products", "R2, R29")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        sub = _subscription(await _locked(conn, subscription_id))
        effective_at = domain.product_switch_effective_at(
            sub, body.new_offering, await _now(rt, conn, row["account_id"])
        )
        await repository.update_subscription(
            conn, subscription_id, pending_offering=body.new_offering
        )
        await rt.outbox.emit(
            conn,
            ProductSwitchScheduled(new_offering=body.new_offering, effective_at=effective_at),
            account_id=row["account_id"],
            subscription_id=subscription_id,
        )
        return 200, await _subscription_answer(conn, subscription_id)

    return await once(request, who, idempotency_key, body, work)


@router.post("/subscriptions/{subscription_id}/seats", status_code=201)
async def add_seats(
    subscription_id: uuid.UUID,
    body: AddSeats,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R30: licences added are co-termed with the subscription, priced pro rata by days."""
    rt = runtime_of(request)
    row = await _buyers_subscription(rt, who, subscription_id, "add licences", "R2, R30")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.lock_account(conn, row["account_id"])
        sub = _subscription(await _locked(conn, subscription_id))
        assert account is not None
        prorate_from, coterm_until = domain.coterm_period(
            sub, await _now(rt, conn, row["account_id"])
        )
        total = sub.seats + body.seats
        if total > domain.MAX_SEATS:
            raise domain.invalid("seats", f"At most {domain.MAX_SEATS} seats a subscription.")
        order = await _follow_up_order(
            conn, row, who.subject, "seats", body.seats, sub.payment_method, prorate_from
        )
        await repository.update_subscription(conn, subscription_id, seats=total)
        added = SeatsAdded(
            order_id=order["id"],
            order_number=order["order_number"],
            offering=sub.offering,
            term=sub.term,
            seats_added=body.seats,
            total_seats=total,
            prorate_from=prorate_from,
            coterm_until=coterm_until,
            payment_method=sub.payment_method,
            billing_country=account["country"],
            currency=account["currency"],
            time_zone=sub.time_zone,
            payment_token=body.payment_token,
        )
        await rt.outbox.emit(conn, added, account_id=account["id"], subscription_id=subscription_id)
        return 201, as_json({**order, "total_seats": total, "coterm_until": coterm_until})

    return await once(request, who, idempotency_key, body, work)


@router.post("/subscriptions/{subscription_id}/renewals", status_code=201)
async def request_renewal(
    subscription_id: uuid.UUID,
    body: RequestRenewal,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R26, R27: a manual renewal from 90 days before the renewal date, or a late one after it
    (45 days annual/three-year, 30 days monthly). Pending term or product changes apply."""
    rt = runtime_of(request)
    row = await _buyers_subscription(rt, who, subscription_id, "renew", "R2, R27")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        account = await repository.lock_account(conn, row["account_id"])
        locked = await _locked(conn, subscription_id)
        assert account is not None
        sub = _subscription(locked)
        now = await _now(rt, conn, row["account_id"])
        kind = domain.renewal_kind(sub, now)
        renewing = domain.renews_at(sub)
        if await repository.renewal_requested(conn, subscription_id, renewing):
            raise Problem(
                409,
                "renewal-already-requested",
                "Renewal already requested",
                "This renewal date already has a renewal request.",
            )
        offering = locked["pending_offering"] or sub.offering
        term: Term = locked["pending_term"] or sub.term
        method = body.payment_method or sub.payment_method
        price = domain.price(offering, term, sub.seats, account["currency"])
        domain.check_payment_method(
            method,
            via_partner_quote=sub.channel == "partner",
            has_invoice_subscription=await repository.has_invoice_subscription(conn, account["id"]),
            usd_value=price.usd_value,
            prepay_only=account["prepay_only"],
        )
        renewal = {
            "id": uuid.uuid4(),
            "subscription_id": subscription_id,
            "kind": kind,
            "renews_at": renewing,
            "payment_method": method,
            "requested_by": who.subject,
            "requested_at": now,
        }
        await repository.insert_renewal_request(conn, renewal)
        requested = RenewalRequested(
            request_id=renewal["id"],
            kind=kind,
            offering=offering,
            term=term,
            seats=sub.seats,
            payment_method=method,
            channel=sub.channel,
            requested_at=now,
            payment_token=body.payment_token,
        )
        await rt.outbox.emit(
            conn, requested, account_id=account["id"], subscription_id=subscription_id
        )
        return 201, as_json({**renewal, "offering": offering, "term": term, "seats": sub.seats})

    return await once(request, who, idempotency_key, body, work)


@router.post("/subscriptions/{subscription_id}/refunds", status_code=201)
async def request_refund(
    subscription_id: uuid.UUID,
    body: RequestRefund,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R38: direct purchases only, inside 15 (monthly) or 30 days (annual, three-year) of the
    purchase or renewal, never for non-refundable products. R39: access ends at once."""
    rt = runtime_of(request)
    row = await _buyers_subscription(rt, who, subscription_id, "request refunds", "R2, R38")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        sub = _subscription(await _locked(conn, subscription_id))
        now = await _now(rt, conn, row["account_id"])
        purchase_kind, purchased_at = domain.check_refundable(sub, now)
        refund = {
            "id": uuid.uuid4(),
            "subscription_id": subscription_id,
            "purchase_kind": purchase_kind,
            "purchased_at": purchased_at,
            "reason": body.reason,
            "approved_by": who.subject,
            "approved_at": now,
        }
        await repository.insert_refund(conn, refund)
        await repository.update_subscription(
            conn, subscription_id, refunded_at=now, stage="cancelled", auto_renew=False
        )
        approved = RefundApproved(
            refund_id=refund["id"],
            purchase_kind=purchase_kind,
            purchased_at=purchased_at,
            reason=body.reason,
            approved_at=now,
        )
        await rt.outbox.emit(
            conn, approved, account_id=row["account_id"], subscription_id=subscription_id
        )
        return 201, as_json(refund)

    return await once(request, who, idempotency_key, body, work)
