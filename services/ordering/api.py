"""Ordering's HTTP door: accounts and orders."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from shared import people
from shared.auth import Principal, issue_token, verify_token
from shared.contracts import AccountOpened, Language, OrderPlaced, PaymentMethod, Person, Term
from shared.db import Conn
from shared.idempotency import check_key, request_fingerprint, run_once
from shared.problems import Problem, not_found
from shared.runtime import Runtime, as_json, runtime_of

from . import domain, repository

router = APIRouter(prefix="/v1", tags=["ordering"])


def _no_control_characters(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (CR, LF, ...)")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_control_characters)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(Strict):
    email: EmailStr = Field(max_length=254)
    name: Name


class OpenAccount(Strict):
    name: Name
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2 billing country")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency")
    language: Language = "en"
    time_zone: str = Field(max_length=64, description="IANA time zone, e.g. Europe/Oslo")
    tax_exempt_reason: Name | None = None
    buyer: NewUser


class PlaceOrder(Strict):
    offering: str = Field(max_length=64)
    term: Term
    seats: int = Field(gt=0, le=10_000)
    payment_method: PaymentMethod
    auto_renew: bool = True


def principal(request: Request, authorization: str | None) -> Principal:
    rt = runtime_of(request)
    return verify_token(rt.settings, rt.clock, authorization)


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
Authorization = Annotated[str | None, Header()]


@router.post("/accounts", status_code=201)
async def open_account(
    body: OpenAccount, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Open an account; its first user becomes buyer and primary admin (R1)."""
    rt = runtime_of(request)
    key = check_key(idempotency_key)
    domain.check_account_fields(body.country, body.currency, body.time_zone)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        now = rt.clock.now()
        account_id, user_id = uuid.uuid4(), uuid.uuid4()
        account = {
            "id": account_id,
            "name": body.name,
            "country": body.country,
            "currency": body.currency,
            "language": body.language,
            "time_zone": body.time_zone,
            "tax_exempt_reason": body.tax_exempt_reason,
            "test_clock_id": None,
            "opened_at": now,
        }
        await repository.insert_account(conn, account)
        await repository.insert_user(
            conn,
            user_id=user_id,
            account_id=account_id,
            email=body.buyer.email,
            name=body.buyer.name,
            language=body.language,
            created_at=now,
        )
        buyer = Person(
            user_id=user_id, email=body.buyer.email, name=body.buyer.name, language=body.language
        )
        snapshot = domain.first_roles_snapshot(buyer)
        await people.apply_snapshot(conn, account_id, snapshot)
        opened = AccountOpened(
            name=body.name,
            country=body.country,
            currency=body.currency,
            language=body.language,
            time_zone=body.time_zone,
            tax_exempt_reason=body.tax_exempt_reason,
        )
        await rt.outbox.emit(conn, opened, account_id=account_id)
        await rt.outbox.emit(conn, snapshot, account_id=account_id)
        return 201, as_json(
            {**account, "buyer": buyer.model_dump(), "roles": ["buyer", "primary_admin"]}
        )

    fingerprint = request_fingerprint("POST", "/v1/accounts", body.model_dump(mode="json"))
    status, answer = await run_once(
        rt.pool, scope="open-account", key=key, fingerprint=fingerprint, work=work
    )
    token = issue_token(
        rt.settings,
        rt.clock,
        subject=uuid.UUID(answer["buyer"]["user_id"]),
        account_id=uuid.UUID(answer["id"]),
    )
    return JSONResponse({**answer, "token": token}, status_code=status)


@router.get("/accounts/{account_id}")
async def get_account(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = principal(request, authorization)
    await people.require_role(
        rt.pool, who, account_id, {"buyer", "primary_admin", "secondary_admin", "payer"}, "account"
    )
    account = await repository.get_account(rt.pool, account_id)
    if account is None:
        raise not_found("account")
    async with rt.pool.acquire() as conn:
        members = await repository.people(conn, account_id)
    return as_json({**dict(account), "people": [dict(m) for m in members]})  # type: ignore[no-any-return]


@router.post("/accounts/{account_id}/orders", status_code=201)
async def place_order(
    account_id: uuid.UUID,
    body: PlaceOrder,
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Place a direct order (R16). Only the buyer may order (R2); payment rules R14."""
    rt = runtime_of(request)
    who = principal(request, authorization)
    key = check_key(idempotency_key)
    roles = await people.require_role(
        rt.pool, who, account_id, {"buyer", "primary_admin", "secondary_admin", "payer"}, "account"
    )
    if who.kind != "user":
        raise Problem(403, "buyer-only", "Only the buyer may order", "Orders are the buyer's (R2).")
    domain.check_may_order(roles)
    domain.check_offering(body.offering, body.term)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        return await _place_order(rt, conn, account_id, who.subject, body)

    fingerprint = request_fingerprint("POST", request.url.path, body.model_dump(mode="json"))
    status, answer = await run_once(
        rt.pool, scope=f"place-order:{who.subject}", key=key, fingerprint=fingerprint, work=work
    )
    return JSONResponse(answer, status_code=status)


async def _place_order(
    rt: Runtime,
    conn: Conn,
    account_id: uuid.UUID,
    buyer_id: uuid.UUID,
    body: PlaceOrder,
) -> tuple[int, dict[str, Any]]:
    account = await repository.get_account(conn, account_id)
    if account is None:
        raise not_found("account")
    domain.check_payment_method(
        body.payment_method,
        via_partner_quote=False,
        has_invoice_subscription=await repository.has_invoice_subscription(conn, account_id),
    )
    buyer = next(p for p in await repository.people(conn, account_id) if p["user_id"] == buyer_id)
    subscription_id = uuid.uuid4()
    order: dict[str, Any] = {
        "id": uuid.uuid4(),
        "order_number": domain.order_number(await repository.next_order_number(conn)),
        "account_id": account_id,
        "placed_by": buyer_id,
        "subscription_id": subscription_id,
        "offering": body.offering,
        "term": body.term,
        "seats": body.seats,
        "payment_method": body.payment_method,
        "channel": "direct",
        "auto_renew": body.auto_renew,
        "placed_at": rt.clock.now(),
    }
    await repository.insert_order(conn, order)
    placed = OrderPlaced(
        order_id=order["id"],
        order_number=order["order_number"],
        subscription_id=order["subscription_id"],
        offering=body.offering,
        term=body.term,
        seats=body.seats,
        payment_method=body.payment_method,
        channel="direct",
        billing_country=account["country"],
        currency=account["currency"],
        time_zone=account["time_zone"],
        placed_at=order["placed_at"],
        auto_renew=body.auto_renew,
        buyer_email=buyer["email"],
    )
    await rt.outbox.emit(
        conn, placed, account_id=account_id, subscription_id=order["subscription_id"]
    )
    return 201, as_json(order)


@router.get("/orders/{order_id}")
async def get_order(
    order_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    """An order is billing data: the buyer's (R8)."""
    rt = runtime_of(request)
    who = principal(request, authorization)
    order = await repository.get_order(rt.pool, order_id)
    if order is None:
        raise not_found("order")
    await people.require_role(rt.pool, who, order["account_id"], {"buyer"}, "order")
    return as_json(dict(order))  # type: ignore[no-any-return]


@router.get("/accounts/{account_id}/orders")
async def list_orders(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = principal(request, authorization)
    await people.require_role(rt.pool, who, account_id, {"buyer"}, "account")
    orders = await repository.list_orders(rt.pool, account_id)
    return {"items": as_json([dict(o) for o in orders])}
