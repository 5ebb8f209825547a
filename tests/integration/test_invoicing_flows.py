"""Invoicing on the real Kafka and PostgreSQL: the events it consumes, the events it emits, its
timers (on a test clock) and its HTTP door.

Events go in through Kafka; what invoicing emits is read from its outbox (the relay that
publishes it is proven by the foundation's tests). Each test opens its own account.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pypdf import PdfReader

from services.invoicing import domain, exchange_rates, kid
from services.invoicing.gateway import CARD_SANDBOX
from services.ordering import billing_identity
from shared.auth import issue_token
from shared.config import Settings
from shared.contracts import (
    AccountOpened,
    AutoRenewChanged,
    BillingDetailsChanged,
    BillingIdentity,
    Contract,
    OrderPlaced,
    Person,
    RefundApproved,
    RenewalDue,
    RenewalRequested,
    RolesChanged,
    SeatsAdded,
    StageChanged,
    TrialConverted,
    new_envelope,
)
from shared.time.clock import SystemClock
from shared.topics import Topics
from tests import einvoice
from tests.integration.conftest import in_process
from tests.support import Backing, Deployment, deployment, wait_for

pytestmark = pytest.mark.integration
OSLO = ZoneInfo("Europe/Oslo")
T0 = datetime(2026, 6, 1, 0, 0, tzinfo=OSLO)  # a renewal date, local midnight


@dataclass
class Invoicing:
    dep: Deployment
    app: FastAPI
    pool: asyncpg.Pool
    producer: AIOKafkaProducer

    def topic(self, producer: str) -> str:
        return Topics(self.dep.prefix).events(producer)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://invoicing"
        )

    def token(self, subject: uuid.UUID, kind: str = "user") -> dict[str, str]:
        token = issue_token(
            self.dep.settings("invoicing"),
            SystemClock(),
            subject=subject,
            kind=kind,  # type: ignore[arg-type]
        )
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def invoicing(backing: Backing) -> AsyncIterator[Invoicing]:
    async with deployment(backing, ("invoicing",)) as dep, in_process(dep, "invoicing") as app:
        producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
        await producer.start()
        try:
            yield Invoicing(dep, app, app.state.runtime.pool, producer)
        finally:
            await producer.stop()


@dataclass
class Account:
    id: uuid.UUID
    clock_id: uuid.UUID
    buyer: Person
    admin: Person
    payers: list[Person]
    stranger: uuid.UUID


def person(role: str) -> Person:
    return Person(
        user_id=uuid.uuid4(),
        email=f"{role}-{uuid.uuid4().hex[:8]}@example.com",
        name=f"{role.title()} Nordmann",
        language="nb",
    )


def envelope(
    event: Contract,
    account_id: uuid.UUID,
    *,
    at: datetime,
    subscription_id: uuid.UUID | None = None,
    producer: str = "ordering",
) -> bytes:
    env = new_envelope(
        event=event,
        producer=producer,
        account_id=account_id,
        subscription_id=subscription_id,
        occurred_at=at,
        recorded_at=at,
    )
    return env.model_dump_json().encode()


async def send(inv: Invoicing, producer: str, account_id: uuid.UUID, *bodies: bytes) -> None:
    for body in bodies:
        await inv.producer.send_and_wait(
            inv.topic(producer), value=body, key=str(account_id).encode()
        )


async def open_account(
    inv: Invoicing, *, payers: int = 0, exempt: str | None = None, currency: str = "NOK"
) -> Account:
    """An account on its own test clock, standing at T0."""
    account = Account(
        id=uuid.uuid4(),
        clock_id=uuid.uuid4(),
        buyer=person("buyer"),
        admin=person("admin"),
        payers=[person("payer") for _ in range(payers)],
        stranger=uuid.uuid4(),
    )
    await inv.pool.execute(
        "INSERT INTO test_clock_times (clock_id, now) VALUES ($1, $2)", account.clock_id, T0
    )
    opened = AccountOpened(
        name="Fjordbygg AS",
        country="NO",
        currency=currency,
        language="nb",
        time_zone="Europe/Oslo",
        tax_exempt_reason=exempt,
        test_clock_id=account.clock_id,
    )
    roles = RolesChanged(buyer=account.buyer, primary_admin=account.admin, payers=account.payers)
    start = T0 - timedelta(days=400)
    await send(
        inv,
        "ordering",
        account.id,
        envelope(opened, account.id, at=start),
        envelope(roles, account.id, at=start),
    )
    return account


def nb_money(amount: str | Decimal) -> str:
    """As a Norwegian reads an amount in kroner: 21 330,00 kr."""
    return f"{Decimal(amount):,.2f}".replace(",", " ").replace(".", ",") + " kr"


def nb_day(iso: str) -> str:
    return date.fromisoformat(iso).strftime("%d.%m.%Y")


async def advance(inv: Invoicing, account: Account, to: datetime) -> None:
    """Move the account's test clock (the timers loop is woken as a clock advance would)."""
    await inv.pool.execute(
        "UPDATE test_clock_times SET now = $2 WHERE clock_id = $1", account.clock_id, to
    )
    await inv.pool.execute("SELECT pg_notify('timers', '')")


def order(
    subscription_id: uuid.UUID,
    *,
    placed_at: datetime,
    term: str = "annual",
    method: str = "card",
    token: str | None = None,
    channel: str = "direct",
    trial: bool = False,
    currency: str = "NOK",
    seats: int = 2,
    quote_id: uuid.UUID | None = None,
) -> OrderPlaced:
    return OrderPlaced(
        order_id=uuid.uuid4(),
        order_number=f"ORD-{uuid.uuid4().hex[:6]}",
        subscription_id=subscription_id,
        offering="autocad",
        term=term,
        seats=seats,
        payment_method=method,
        channel=channel,
        billing_country="NO",
        currency=currency,
        time_zone="Europe/Oslo",
        placed_at=placed_at,
        buyer_email="buyer@example.com",
        trial=trial,
        payment_token=token,
        quote_id=quote_id,
    )


def renewal_due(method: str = "card", term: str = "annual") -> RenewalDue:
    return RenewalDue(
        renewal_id=uuid.uuid4(),
        offering="autocad",
        term=term,
        seats=2,
        payment_method=method,
        channel="direct",
        time_zone="Europe/Oslo",
        period_starts_at=T0,
        period_ends_at=T0 + timedelta(days=365),
    )


async def emitted(inv: Invoicing, account: Account, event_type: str) -> list[dict[str, Any]]:
    rows = await inv.pool.fetch(
        "SELECT body FROM outbox WHERE event_type = $1 AND message_key = $2 ORDER BY id",
        event_type,
        str(account.id),
    )
    return [json.loads(bytes(r["body"]))["payload"] for r in rows]


async def wait_emitted(
    inv: Invoicing, account: Account, event_type: str, count: int = 1, **match: Any
) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        events = [
            e
            for e in await emitted(inv, account, event_type)
            if all(e.get(k) == v for k, v in match.items())
        ]
        return events if len(events) >= count else None

    return await wait_for(found, timeout=30, what=f"{count} {event_type} {match}")


async def subscribed(
    inv: Invoicing, account: Account, **order_args: Any
) -> tuple[uuid.UUID, OrderPlaced]:
    """A subscription bought a year before T0, its order invoiced."""
    sub = uuid.uuid4()
    placed = order(sub, placed_at=T0 - timedelta(days=365), **order_args)
    await send(
        inv,
        "ordering",
        account.id,
        envelope(placed, account.id, at=placed.placed_at, subscription_id=sub),
    )
    await wait_emitted(inv, account, "InvoiceIssued", order_id=str(placed.order_id))
    return sub, placed


# --- R25, R7: renewal invoices; redelivery never invoices or charges twice ----------------------


async def test_r25_r7_renewal_due_is_invoiced_and_charged_once_even_when_redelivered(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv, payers=6)
    sub = uuid.uuid4()
    placed = order(sub, placed_at=T0 - timedelta(days=365))
    first = envelope(placed, account.id, at=placed.placed_at, subscription_id=sub)
    republished = envelope(placed, account.id, at=placed.placed_at, subscription_id=sub)
    due = renewal_due()
    renewal = envelope(due, account.id, at=T0, subscription_id=sub, producer="lifecycle")
    renewal_again = envelope(due, account.id, at=T0, subscription_id=sub, producer="lifecycle")
    # Each event delivered twice, and each cause also re-published under a new event id.
    await send(inv, "ordering", account.id, first, first, republished)
    # Topics are not ordered with each other: the renewal comes once the order is known.
    await wait_emitted(inv, account, "InvoicePaid", purpose="order")
    await send(inv, "lifecycle", account.id, renewal, renewal, renewal_again)

    [paid] = await wait_emitted(inv, account, "InvoicePaid", purpose="renewal")
    assert paid["renewal_id"] == str(due.renewal_id)

    async def all_handled() -> bool:
        handled = await inv.pool.fetchval(
            "SELECT count(*) FROM inbox WHERE event_type IN ('OrderPlaced', 'RenewalDue')"
            " AND event_id = ANY($1::uuid[])",
            [json.loads(b)["event_id"] for b in (first, republished, renewal, renewal_again)],
        )
        return int(handled) == 4

    await wait_for(all_handled, what="every delivery handled")
    invoices = await inv.pool.fetch(
        "SELECT id, purpose, renewal_id FROM invoices WHERE subscription_id = $1 ORDER BY purpose",
        sub,
    )
    assert [(r["purpose"], r["renewal_id"]) for r in invoices] == [
        ("order", None),
        ("renewal", due.renewal_id),
    ]
    for invoice in invoices:
        attempts = await inv.pool.fetchval(
            "SELECT count(*) FROM charge_attempts WHERE invoice_id = $1", invoice["id"]
        )
        charged = [c for c in CARD_SANDBOX.charges if c[0].startswith(str(invoice["id"]))]
        assert attempts == 1 and len(charged) == 1
    assert await inv.pool.fetchval(
        "SELECT count(*) FROM payments WHERE invoice_id = ANY($1::uuid[])",
        [r["id"] for r in invoices],
    ) == len(invoices)
    issued = await wait_emitted(inv, account, "InvoiceIssued", purpose="renewal")
    assert len(issued) == 1
    assert issued[0]["renewal_id"] == str(due.renewal_id)
    assert issued[0]["due_date"] == "2026-06-01"  # R21: card charged at issue
    # R7: six payers on the account, five on the invoice.
    assert len(issued[0]["payer_emails"]) == 5
    assert set(issued[0]["payer_emails"]) < {p.email for p in account.payers}
    [succeeded] = [
        e
        for e in await emitted(inv, account, "PaymentSucceeded")
        if e["invoice_id"] == issued[0]["invoice_id"]
    ]
    assert Decimal(succeeded["amount"]) == Decimal(issued[0]["gross_total"])


async def test_r25_r21_an_invoice_account_renewal_is_billed_net_30_and_paid_by_bank(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv)
    sub, _ = await subscribed(inv, account, method="invoice")
    due = renewal_due(method="invoice")
    await send(
        inv,
        "lifecycle",
        account.id,
        envelope(due, account.id, at=T0, subscription_id=sub, producer="lifecycle"),
    )
    [issued] = await wait_emitted(inv, account, "InvoiceIssued", purpose="renewal")
    assert issued["payment_method"] == "invoice"
    assert issued["due_date"] == (T0.date() + timedelta(days=30)).isoformat()
    assert await emitted(inv, account, "PaymentSucceeded") == []

    path = f"/v1/operator/invoices/{issued['invoice_id']}/bank-payments"
    body = {"amount": issued["gross_total"], "reference": "KID 1234567"}
    async with inv.http() as client:
        as_user = await client.post(
            path, json=body, headers={**inv.token(account.buyer.user_id), "Idempotency-Key": "a"}
        )
        assert as_user.status_code == 403
        assert as_user.headers["content-type"] == "application/problem+json"
        operator = inv.token(uuid.uuid4(), kind="operator")
        wrong = await client.post(
            path,
            json={**body, "amount": "1.00"},
            headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert wrong.status_code == 422
        assert wrong.json()["type"].endswith("amount-mismatch")
        key = str(uuid.uuid4())
        paid = await client.post(path, json=body, headers={**operator, "Idempotency-Key": key})
        again = await client.post(path, json=body, headers={**operator, "Idempotency-Key": key})
        assert paid.status_code == again.status_code == 201
        assert paid.json() == again.json()
        twice = await client.post(
            path, json=body, headers={**operator, "Idempotency-Key": str(uuid.uuid4())}
        )
        assert twice.status_code == 409
    [succeeded] = await wait_emitted(inv, account, "PaymentSucceeded")
    assert succeeded["method"] == "invoice"
    [invoice_paid] = await wait_emitted(inv, account, "InvoicePaid")
    assert (invoice_paid["purpose"], invoice_paid["renewal_id"]) == ("renewal", str(due.renewal_id))


# --- R37: failed renewal charges retried on days 1, 3, 7 and 14 ---------------------------------


async def test_r37_a_failed_renewal_charge_is_retried_on_days_1_3_7_and_14(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv)
    sub, _ = await subscribed(inv, account, token="tok_decline")
    # (ordered a year before the clock's now: the order's own retries may already be firing)
    order_failed = (await wait_emitted(inv, account, "PaymentFailed", purpose="order"))[0]
    assert order_failed["attempt"] == 1
    # Issue 11, defect 1: the order's charge is retried on the same days as a renewal's (R37).
    order_failed_at = datetime.fromisoformat(order_failed["failed_at"])
    assert datetime.fromisoformat(order_failed["next_attempt_at"]) == order_failed_at + timedelta(
        days=1
    )
    due = renewal_due()
    await send(
        inv,
        "lifecycle",
        account.id,
        envelope(due, account.id, at=T0, subscription_id=sub, producer="lifecycle"),
    )
    [first] = await wait_emitted(inv, account, "PaymentFailed", purpose="renewal")
    assert first["attempt"] == 1 and first["reason"] == "card_declined"
    assert datetime.fromisoformat(first["next_attempt_at"]) == T0 + timedelta(days=1)
    # The clock jumps past day 14: the retries fire in date order, each scheduling the next.
    await advance(inv, account, T0 + timedelta(days=20))
    failures = await wait_emitted(inv, account, "PaymentFailed", 5, purpose="renewal")
    assert [f["attempt"] for f in failures] == [1, 2, 3, 4, 5]
    assert [(datetime.fromisoformat(f["failed_at"]) - T0).days for f in failures] == [
        0,
        1,
        3,
        7,
        14,
    ]
    assert [f["next_attempt_at"] is None for f in failures] == [False] * 4 + [True]
    attempts = await inv.pool.fetch(
        "SELECT attempt, attempted_at FROM charge_attempts WHERE invoice_id = $1 ORDER BY attempt",
        uuid.UUID(first["invoice_id"]),
    )
    assert [(a["attempted_at"] - T0).days for a in attempts] == [0, 1, 3, 7, 14]
    assert await emitted(inv, account, "InvoicePaid") == []


async def test_r37_retries_stop_once_the_renewal_is_paid_another_way(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv)
    sub, _ = await subscribed(inv, account, token="tok_insufficient_funds")
    await send(
        inv,
        "lifecycle",
        account.id,
        envelope(renewal_due(), account.id, at=T0, subscription_id=sub, producer="lifecycle"),
    )
    [failed] = await wait_emitted(inv, account, "PaymentFailed", purpose="renewal")
    assert failed["reason"] == "insufficient_funds"
    async with inv.http() as client:
        paid = await client.post(
            f"/v1/operator/invoices/{failed['invoice_id']}/bank-payments",
            json={"amount": failed["amount"], "reference": "transfer"},
            headers={
                **inv.token(uuid.uuid4(), kind="operator"),
                "Idempotency-Key": str(uuid.uuid4()),
            },
        )
    assert paid.status_code == 201, paid.text
    await wait_emitted(inv, account, "InvoicePaid", purpose="renewal")
    assert not await inv.pool.fetchval(
        "SELECT count(*) FROM timers WHERE kind = 'renewal_charge_retry' AND timer_key = $1",
        failed["invoice_id"],
    )
    await advance(inv, account, T0 + timedelta(days=20))
    await wait_for(
        lambda: inv.pool.fetchval(
            "SELECT count(*) = 0 FROM timers t JOIN test_clock_times c USING (clock_id)"
            " WHERE t.status = 'pending' AND t.due_at <= c.now"
        ),
        what="no timer left due",
    )
    assert (
        await inv.pool.fetchval(
            "SELECT count(*) FROM charge_attempts WHERE invoice_id = $1",
            uuid.UUID(failed["invoice_id"]),
        )
        == 1
    )


# --- R20: three-year installments on the anniversaries --------------------------------------------


async def test_r20_a_three_year_term_is_invoiced_in_three_annual_installments(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv, payers=1)
    sub = uuid.uuid4()
    placed = order(sub, placed_at=T0, term="three_year")
    await send(
        inv, "ordering", account.id, envelope(placed, account.id, at=T0, subscription_id=sub)
    )
    [first] = await wait_emitted(inv, account, "InvoiceIssued")
    assert (first["purpose"], first["installment"]) == ("order", 1)
    await advance(inv, account, T0 + timedelta(days=365 * 2 + 2))
    issued = await wait_emitted(inv, account, "InvoiceIssued", 3)
    assert [(i["purpose"], i["installment"]) for i in issued] == [
        ("order", 1),
        ("installment", 2),
        ("installment", 3),
    ]
    assert [datetime.fromisoformat(i["issued_at"]).astimezone(OSLO) for i in issued] == [
        T0,
        datetime(2027, 6, 1, tzinfo=OSLO),
        datetime(2028, 6, 1, tzinfo=OSLO),
    ]
    assert {i["gross_total"] for i in issued} == {first["gross_total"]}
    assert all(i["order_id"] == str(placed.order_id) for i in issued)
    assert all(i["payer_emails"] == [account.payers[0].email] for i in issued)
    paid = await wait_emitted(inv, account, "InvoicePaid", 3)
    assert [p["purpose"] for p in paid] == ["order", "installment", "installment"]


# --- R17, R27, R30: trials, requested renewals, co-terms ----------------------------------------


async def test_r17_r27_r30_trial_conversion_requested_renewal_and_co_term(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv)
    sub = uuid.uuid4()
    trial = order(sub, placed_at=T0 - timedelta(days=30), trial=True, method="paypal")
    converted = TrialConverted(
        order_id=uuid.uuid4(),
        order_number="ORD-CONV",
        term="annual",
        seats=3,
        payment_method="paypal",
        converted_at=T0 - timedelta(days=200),
    )
    added = SeatsAdded(
        order_id=uuid.uuid4(),
        order_number="ORD-SEATS",
        offering="autocad",
        term="annual",
        seats_added=2,
        total_seats=5,
        prorate_from=T0 - timedelta(days=100),
        coterm_until=T0 + timedelta(days=65),
        payment_method="paypal",
        billing_country="NO",
        currency="NOK",
        time_zone="Europe/Oslo",
    )
    requested = RenewalRequested(
        request_id=uuid.uuid4(),
        kind="late",
        offering="autocad",
        term="annual",
        seats=5,
        payment_method="paypal",
        channel="direct",
        requested_at=T0,
    )
    await send(
        inv,
        "ordering",
        account.id,
        envelope(trial, account.id, at=trial.placed_at, subscription_id=sub),
        envelope(converted, account.id, at=converted.converted_at, subscription_id=sub),
        envelope(added, account.id, at=added.prorate_from, subscription_id=sub),
        envelope(requested, account.id, at=T0, subscription_id=sub),
    )
    # R27: the request alone bills nothing; lifecycle answers it with RenewalDue, billed once.
    await wait_emitted(inv, account, "InvoiceIssued", 2)
    due = renewal_due(method="paypal").model_copy(update={"seats": 5})
    await send(inv, "lifecycle", account.id, envelope(due, account.id, at=T0, subscription_id=sub))
    issued = await wait_emitted(inv, account, "InvoiceIssued", 3)
    # R17: nothing for the trial itself; the conversion is invoiced like an order.
    assert [(i["purpose"], i["order_id"]) for i in issued] == [
        ("order", str(converted.order_id)),
        ("co_term", str(added.order_id)),
        ("renewal", None),
    ]
    assert issued[0]["lines"][0]["quantity"] == 3
    # R30: 2 seats pro rata for the 165 days from prorate_from to the renewal, of 365.
    co_term = issued[1]["lines"][0]
    assert co_term["quantity"] == 2 and ": 165 of 365 days" in co_term["description"]
    full = domain.unit_price("autocad", "annual", "NOK")
    assert Decimal(co_term["unit_price"]) == domain.round_money(full * 165 / 365, "NOK")
    assert issued[2]["renewal_id"] == str(due.renewal_id)
    assert issued[2]["lines"][0]["quantity"] == 5
    paid = await wait_emitted(inv, account, "InvoicePaid", 3)
    assert [p["purpose"] for p in paid] == ["order", "co_term", "renewal"]
    assert paid[2]["renewal_id"] == str(due.renewal_id)
    assert len(await emitted(inv, account, "InvoiceIssued")) == 3


# --- R39: credit notes and refunds ---------------------------------------------------------------


@pytest.mark.parametrize(("method", "business_days"), [("card", 7), ("paypal", 3)])
async def test_r39_a_refund_issues_a_credit_note_and_pays_back_through_the_method(
    invoicing: Invoicing, method: str, business_days: int
) -> None:
    inv = invoicing
    account = await open_account(inv)
    sub, _ = await subscribed(inv, account, method=method)
    [paid_invoice] = await wait_emitted(inv, account, "InvoiceIssued")
    approved_at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=T0 - timedelta(days=365),
        reason="Bought by mistake",
        approved_at=approved_at,
    )
    body = envelope(refund, account.id, at=approved_at, subscription_id=sub)
    await send(inv, "ordering", account.id, body, body)
    [note] = await wait_emitted(inv, account, "CreditNoteIssued")
    [processed] = await wait_emitted(inv, account, "RefundProcessed")
    assert note["invoice_id"] == paid_invoice["invoice_id"]
    assert note["credit_note_number"].startswith("CN-")
    assert Decimal(note["gross_total"]) == Decimal(paid_invoice["gross_total"]) > 0
    assert processed["method"] == method
    assert Decimal(processed["amount"]) == Decimal(paid_invoice["gross_total"])
    expected = domain.add_business_days(approved_at.astimezone(OSLO).date(), business_days)
    assert processed["expected_settlement_date"] == expected.isoformat()
    assert (
        await inv.pool.fetchval(
            "SELECT status FROM invoices WHERE id = $1", uuid.UUID(note["invoice_id"])
        )
        == "credited"
    )
    async with inv.http() as client:
        auth = inv.token(account.buyer.user_id)
        pdf = await client.get(f"/v1/credit-notes/{note['credit_note_id']}.pdf", headers=auth)
    assert pdf.status_code == 200
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    text = text.replace("\xa0", " ")
    assert note["credit_note_number"] in text
    assert f"-{nb_money(note['gross_total'])}" in text
    assert nb_day(expected.isoformat()) in text


async def test_r39_a_refund_credits_the_purchase_not_a_later_co_term_invoice(
    invoicing: Invoicing,
) -> None:
    """Bought, then seats added (a small co-term invoice), then refunded: the credit note pays
    back the purchase itself, the money that bought the access R39 ends."""
    inv = invoicing
    account = await open_account(inv)
    sub, placed = await subscribed(inv, account)
    added = SeatsAdded(
        order_id=uuid.uuid4(),
        order_number="ORD-SEATS",
        offering="autocad",
        term="annual",
        seats_added=1,
        total_seats=3,
        prorate_from=T0 - timedelta(days=360),
        coterm_until=T0,
        payment_method="card",
        billing_country="NO",
        currency="NOK",
        time_zone="Europe/Oslo",
    )
    await send(
        inv,
        "ordering",
        account.id,
        envelope(added, account.id, at=added.prorate_from, subscription_id=sub),
    )
    await wait_emitted(inv, account, "InvoiceIssued", 2)
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=placed.placed_at,
        reason="Changed our mind",
        approved_at=T0 - timedelta(days=355),
    )
    await send(
        inv,
        "ordering",
        account.id,
        envelope(refund, account.id, at=refund.approved_at, subscription_id=sub),
    )
    [note] = await wait_emitted(inv, account, "CreditNoteIssued")
    order_invoice = await inv.pool.fetchrow(
        "SELECT id, gross_total FROM invoices WHERE order_id = $1 AND purpose = 'order'",
        placed.order_id,
    )
    assert order_invoice is not None
    assert note["invoice_id"] == str(order_invoice["id"])
    assert Decimal(note["gross_total"]) == order_invoice["gross_total"]


# --- HTTP: R8 access, R22 purchase orders, R18 and the PDF ---------------------------------------


async def test_r8_buyers_and_payers_read_invoices_admins_get_403_strangers_404(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv, payers=1)
    await subscribed(inv, account)
    [issued] = await wait_emitted(inv, account, "InvoiceIssued")
    async with inv.http() as client:
        for reader in (account.buyer.user_id, account.payers[0].user_id):
            listed = await client.get(
                f"/v1/accounts/{account.id}/invoices", headers=inv.token(reader)
            )
            assert [i["invoice_number"] for i in listed.json()["items"]] == [
                issued["invoice_number"]
            ]
            one = await client.get(
                f"/v1/invoices/{issued['invoice_id']}", headers=inv.token(reader)
            )
            assert one.json()["gross_total"] == issued["gross_total"]
        for who, status in ((account.admin.user_id, 403), (account.stranger, 404)):
            for path in (
                f"/v1/accounts/{account.id}/invoices",
                f"/v1/invoices/{issued['invoice_id']}",
                f"/v1/invoices/{issued['invoice_id']}.pdf",
            ):
                denied = await client.get(path, headers=inv.token(who))
                assert denied.status_code == status, path
                assert denied.headers["content-type"] == "application/problem+json"


async def test_r22_po_number_notes_and_document_are_editable_until_paid(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv, payers=1)
    sub, _ = await subscribed(inv, account, method="invoice")
    [issued] = await wait_emitted(inv, account, "InvoiceIssued")
    path = f"/v1/invoices/{issued['invoice_id']}"
    auth = inv.token(account.buyer.user_id)
    document = b"%PDF-1.4 purchase order 4711"
    change = {
        "po_number": "PO-4711",
        "notes": "Cost centre 42",
        "po_document": {
            "file_name": "po-4711.pdf",
            "content_base64": base64.b64encode(document).decode(),
        },
    }
    async with inv.http() as client:
        missing_key = await client.patch(path, json=change, headers=auth)
        assert missing_key.status_code == 400
        key = {"Idempotency-Key": str(uuid.uuid4())}
        first = await client.patch(path, json=change, headers={**auth, **key})
        repeat = await client.patch(path, json=change, headers={**auth, **key})
        assert first.status_code == repeat.status_code == 200
        assert first.json() == repeat.json()
        assert (first.json()["po_number"], first.json()["notes"]) == ("PO-4711", "Cost centre 42")
        notes_only = await client.patch(
            path,
            json={"notes": "Cost centre 43"},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert (notes_only.json()["po_number"], notes_only.json()["notes"]) == (
            "PO-4711",
            "Cost centre 43",
        )
        stored = await client.get(f"{path}/po-document", headers=auth)
        assert stored.content == document
        # R22 also for the coming renewal invoice: given now, printed on it when it is issued.
        renewal_po = await client.put(
            f"/v1/subscriptions/{sub}/renewal-purchase-order",
            json={"po_number": "PO-RENEW-9"},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert renewal_po.status_code == 200
        payer_try = await client.put(  # R8: renewal data is the buyer's, not a payer's
            f"/v1/subscriptions/{sub}/renewal-purchase-order",
            json={"po_number": "PO-PAYER"},
            headers={**inv.token(account.payers[0].user_id), "Idempotency-Key": "payer"},
        )
        assert payer_try.status_code == 403
        await client.post(
            f"/v1/operator/invoices/{issued['invoice_id']}/bank-payments",
            json={"amount": issued["gross_total"], "reference": "bank"},
            headers={
                **inv.token(uuid.uuid4(), kind="operator"),
                "Idempotency-Key": str(uuid.uuid4()),
            },
        )
        too_late = await client.patch(
            path, json={"po_number": "PO-LATE"}, headers={**auth, "Idempotency-Key": "late"}
        )
        assert too_late.status_code == 409
        assert too_late.json()["type"].endswith("invoice-not-editable")
    await send(
        inv,
        "lifecycle",
        account.id,
        envelope(
            renewal_due(method="invoice"),
            account.id,
            at=T0,
            subscription_id=sub,
            producer="lifecycle",
        ),
    )
    [renewal] = await wait_emitted(inv, account, "InvoiceIssued", purpose="renewal")
    assert (
        await inv.pool.fetchval(
            "SELECT po_number FROM invoices WHERE id = $1", uuid.UUID(renewal["invoice_id"])
        )
        == "PO-RENEW-9"
    )


@pytest.mark.parametrize("exempt", [None, "Exempt: international organisation (MVA-loven 6-33)"])
async def test_r18_the_pdf_shows_number_totals_each_vat_line_and_any_exemption(
    invoicing: Invoicing, exempt: str | None
) -> None:
    inv = invoicing
    account = await open_account(inv, exempt=exempt)
    await subscribed(inv, account, method="invoice")
    [issued] = await wait_emitted(inv, account, "InvoiceIssued")
    async with inv.http() as client:
        response = await client.get(
            f"/v1/invoices/{issued['invoice_id']}.pdf", headers=inv.token(account.buyer.user_id)
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(response.content)).pages)
    text = text.replace("\xa0", " ")
    assert issued["invoice_number"] in text  # a Norwegian account: nb words and formats
    for label, total in (("Sum eks. MVA", "net_total"), ("MVA", "vat_total")):
        assert f"{label}: {nb_money(issued[total])}" in text
    assert f"Å betale: {nb_money(issued['gross_total'])}" in text
    for line in issued["lines"]:
        rate = f"{Decimal(line['vat_rate']).normalize():f}"
        assert f"MVA {rate} % av {nb_money(line['net_amount'])}" in text
    assert nb_day(issued["due_date"]) in text and "Fjordbygg AS" in text
    assert Settings().seller_name in text and "8601.11.17947" in text  # the seller's account
    if exempt:
        assert Decimal(issued["vat_total"]) == 0 and issued["tax_exempt_reason"] == exempt
        assert f"Fritatt for merverdiavgift: {exempt}" in text
    else:
        assert "MVA 25 % av" in text


# --- R19: exchange rates ------------------------------------------------------------------------


async def test_r19_market_rates_by_api_and_csv_give_clamped_applied_rates_on_invoices(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    operator = inv.token(uuid.uuid4(), kind="operator")
    quarter = date(2026, 4, 1)
    async with inv.http() as client:
        api = await client.post(
            "/v1/operator/exchange-rates/market",
            json={"rates": [{"currency": "EUR", "rate": "1.10", "as_of": "2026-03-31"}]},
            headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert api.status_code == 201, api.text
        bad_csv = await client.post(
            "/v1/operator/exchange-rates/market.csv",
            content="currency,rate,as_of\nSEK,-1,2026-03-31\nXXX,1,2026-03-31\n",
            headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert bad_csv.status_code == 422
        assert [e["line"] for e in bad_csv.json()["errors"]] == [2, 3]
        csv_import = await client.post(
            "/v1/operator/exchange-rates/market.csv",
            content="currency,rate,as_of\nSEK,10.65,2026-03-30\n",
            headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert csv_import.json()["recorded"] == 1
        not_quarter = await client.post(
            "/v1/operator/exchange-rates/recompute",
            json={"quarter_start": "2026-05-01"},
            headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert not_quarter.status_code == 422
        recomputed = await client.post(
            "/v1/operator/exchange-rates/recompute",
            json={"quarter_start": quarter.isoformat()},
            headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert recomputed.json()["rates_added"] == 8  # EUR and SEK: 3 direct + 1 partner each
        history = (
            await client.get("/v1/operator/exchange-rates?currency=EUR", headers=operator)
        ).json()["history"]
        denied = await client.get("/v1/operator/exchange-rates", headers=inv.token(uuid.uuid4()))
        assert denied.status_code == 403
    by_channel = {
        channel: [Decimal(h["rate"]) for h in history if h["channel"] == channel]
        for channel in ("direct", "partner")
    }
    start = domain.initial_rate("EUR")  # 0.92: the market's 1.10 is far outside the band
    assert by_channel["partner"] == [(start * Decimal("1.03")).quantize(Decimal("1e-8"))]
    previous = start
    for rate in by_channel["direct"]:
        assert rate == (previous * Decimal("1.01")).quantize(Decimal("1e-8"))
        previous = rate
    # An invoice records the applied rate of its channel.
    account = await open_account(inv, currency="EUR")
    sub = uuid.uuid4()
    placed = order(sub, placed_at=T0, channel="partner", currency="EUR", method="invoice")
    await send(
        inv, "ordering", account.id, envelope(placed, account.id, at=T0, subscription_id=sub)
    )
    [issued] = await wait_emitted(inv, account, "InvoiceIssued")
    rate = await inv.pool.fetchval(
        "SELECT exchange_rate FROM invoices WHERE id = $1", uuid.UUID(issued["invoice_id"])
    )
    assert rate == by_channel["partner"][0]
    assert Decimal(issued["lines"][0]["unit_price"]) == domain.round_money(
        Decimal("1975.00") * rate, "EUR"
    )
    # The next quarter's recomputation is a durable timer.
    next_quarter = await inv.pool.fetchval(
        "SELECT due_at FROM timers WHERE kind = 'fx_quarter' AND status = 'pending'"
    )
    assert next_quarter == exchange_rates.next_quarter_start(datetime.now(UTC))


async def test_a_charge_whose_transaction_rolled_back_is_not_charged_twice(
    invoicing: Invoicing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway charged, then our transaction failed (a crash, a lost connection): the retry
    issues the same invoice id, so the gateway's idempotency key repeats and the card is charged
    once."""
    from services.invoicing.repository import PostgresRepository

    inv = invoicing
    account = await open_account(inv)
    sub = uuid.uuid4()
    placed = order(sub, placed_at=T0)
    real_record = PostgresRepository.record_charge_attempt
    failures = [RuntimeError("connection lost after the gateway answered")]

    async def fail_once(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await real_record(*args, **kwargs)

    monkeypatch.setattr(PostgresRepository, "record_charge_attempt", fail_once)
    charged_before = len(CARD_SANDBOX.charges)
    await send(
        inv, "ordering", account.id, envelope(placed, account.id, at=T0, subscription_id=sub)
    )
    [paid] = await wait_emitted(inv, account, "InvoicePaid", 1)
    assert not failures  # the first attempt did fail after charging
    new_charges = CARD_SANDBOX.charges[charged_before:]
    assert [key for key, _, _ in new_charges] == [f"{paid['invoice_id']}:1"]


@pytest.mark.parametrize("stopper", ["auto_renew_off", "cancelled"])
async def test_r24_r34_r37_no_retry_after_auto_renew_off_or_cancellation(
    invoicing: Invoicing, stopper: str
) -> None:
    """R37 retries a failed renewal charge, but R24 (auto-renew off cancels) and R34/R36
    (Cancelled is final) mean the card is never charged again after either."""
    inv = invoicing
    account = await open_account(inv)
    sub, _ = await subscribed(inv, account, token="tok_insufficient_funds")
    await send(
        inv,
        "lifecycle",
        account.id,
        envelope(renewal_due(), account.id, at=T0, subscription_id=sub, producer="lifecycle"),
    )
    [failed] = await wait_emitted(inv, account, "PaymentFailed", purpose="renewal")
    retries = (
        "SELECT count(*) FROM timers WHERE kind = 'renewal_charge_retry' AND timer_key = $1"
        " AND status = 'pending'"
    )
    assert await inv.pool.fetchval(retries, failed["invoice_id"]) == 1
    stop: Any
    if stopper == "auto_renew_off":
        stop = envelope(
            AutoRenewChanged(auto_renew=False, changed_at=T0),
            account.id,
            at=T0,
            subscription_id=sub,
        )
        await send(inv, "ordering", account.id, stop)
    else:
        stop = envelope(
            StageChanged(
                from_stage="suspended",
                to_stage="cancelled",
                reason="test",
                entitlements={},
                effective_at=T0,
            ),
            account.id,
            at=T0,
            subscription_id=sub,
            producer="lifecycle",
        )
        await send(inv, "lifecycle", account.id, stop)

    async def retries_gone() -> bool:
        return bool(await inv.pool.fetchval(retries, failed["invoice_id"]) == 0)

    await wait_for(retries_gone, what="the R37 retry cancelled")


# --- issue 15: the buyer's billing identity on the PDF and the e-invoice -------------------------


async def with_billing_identity(inv: Invoicing, account: Account) -> BillingIdentity:
    """The identity as ordering publishes it (its own validation, compacted)."""
    given = BillingIdentity(
        address_lines=["Storgata 1", "Bygg B"],
        postcode="0155",
        city="Oslo",
        country="NO",
        organisation_number="923 609 016",
        vat_id="NO 923 609 016 MVA",
    )
    identity = billing_identity.checked(given, "NO", "billing_details")
    body = envelope(BillingDetailsChanged(billing=identity), account.id, at=T0)
    await send(inv, "ordering", account.id, body)

    async def stored() -> bool | None:
        found = await inv.pool.fetchval(
            "SELECT 1 FROM account_billing_details WHERE account_id = $1", account.id
        )
        return True if found else None

    await wait_for(stored, timeout=30, what="the billing identity stored")
    return identity


async def test_issue15_r8_the_pdf_and_e_invoice_name_the_buyer_by_its_billing_identity(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv, payers=1)
    await with_billing_identity(inv, account)
    await subscribed(inv, account, method="invoice")
    [issued] = await wait_emitted(inv, account, "InvoiceIssued")
    invoice = issued["invoice_id"]
    async with inv.http() as client:
        buyer = inv.token(account.buyer.user_id)
        pdf = await client.get(f"/v1/invoices/{invoice}.pdf", headers=buyer)
        xml = await client.get(f"/v1/invoices/{invoice}.xml", headers=buyer)
        payer = await client.get(
            f"/v1/invoices/{invoice}.xml", headers=inv.token(account.payers[0].user_id)
        )
        refused = {
            status: (
                await client.get(f"/v1/invoices/{invoice}.xml", headers=inv.token(who))
            ).status_code
            for who, status in ((account.admin.user_id, 403), (account.stranger, 404))
        }
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    text = text.replace("\xa0", " ")
    reference = kid.for_invoice(issued["invoice_number"])
    for fragment in (
        "Storgata 1",
        "Bygg B",
        "0155 Oslo, Norge",
        "Org.nr. 923 609 016",
        "MVA-nr. NO923609016MVA",
        f"KID {reference}",
        "Leveringsperiode",
        "AutoCAD, årsabonnement",
    ):
        assert fragment in text, fragment
    assert str(account.id) not in text and "Exchange rate" not in text
    assert xml.status_code == 200 and xml.headers["content-type"] == "application/xml"
    assert payer.status_code == 200 and payer.content == xml.content  # R8: payers read it
    assert refused == {403: 403, 404: 404}  # R8: an admin who is not the buyer; a stranger
    assert einvoice.schema_errors(xml.content) == []
    assert einvoice.fatal(einvoice.rule_findings(xml.content)) == []
    assert f"<cbc:PaymentID>{reference}</cbc:PaymentID>".encode() in xml.content


async def test_issue15_a_credit_note_e_invoice_validates_and_keeps_r8(invoicing: Invoicing) -> None:
    inv = invoicing
    account = await open_account(inv)
    await with_billing_identity(inv, account)
    sub, _ = await subscribed(inv, account, method="card")
    approved_at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=T0 - timedelta(days=365),
        reason="Kjøpt ved en feil",
        approved_at=approved_at,
    )
    await send(
        inv,
        "ordering",
        account.id,
        envelope(refund, account.id, at=approved_at, subscription_id=sub),
    )
    [note] = await wait_emitted(inv, account, "CreditNoteIssued")
    path = f"/v1/credit-notes/{note['credit_note_id']}.xml"
    async with inv.http() as client:
        xml = await client.get(path, headers=inv.token(account.buyer.user_id))
        stranger = await client.get(path, headers=inv.token(account.stranger))
    assert xml.status_code == 200, xml.text
    assert stranger.status_code == 404
    assert einvoice.schema_errors(xml.content) == []
    assert einvoice.fatal(einvoice.rule_findings(xml.content)) == []
    assert note["credit_note_number"].encode() in xml.content


async def test_issue15_no_e_invoice_for_a_buyer_without_organisation_number(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv)
    await subscribed(inv, account)
    [issued] = await wait_emitted(inv, account, "InvoiceIssued")
    async with inv.http() as client:
        answer = await client.get(
            f"/v1/invoices/{issued['invoice_id']}.xml", headers=inv.token(account.buyer.user_id)
        )
    assert answer.status_code == 409
    assert answer.json()["type"].endswith("no-electronic-address")


async def test_issue17_one_use_case_reads_the_account_once_and_its_own_writes_refresh_it(
    invoicing: Invoicing,
) -> None:
    """Invoicing an order read the account up to five times; the repository now keeps it for
    the unit of work, and drops it when it writes the account itself."""
    from services.invoicing.repository import PostgresRepository

    account_id = uuid.uuid4()
    opened = AccountOpened(
        name="Fjord Data AS", country="NO", currency="NOK", language="nb", time_zone="Europe/Oslo"
    )
    reads: list[str] = []

    class Counting:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> Any:
            method = getattr(self.conn, name)
            if name.startswith("fetch"):
                reads.append(name)
            return method

    async with invoicing.pool.acquire() as conn, conn.transaction():
        repo = PostgresRepository(Counting(conn))  # type: ignore[arg-type]
        await repo.upsert_account(account_id, opened)
        first = await repo.get_account(account_id)
        again = await repo.get_account(account_id)
        assert first is not None and first == again
        assert first.prepay_only is False
        assert await repo.billing_identity(account_id) is None
        assert await repo.billing_identity(account_id) is None
        assert reads == ["fetchrow", "fetchval"]  # the account once, its billing identity once
        await repo.require_prepayment(account_id)
        refreshed = await repo.get_account(account_id)
        assert refreshed is not None and refreshed.prepay_only is True
        assert reads == ["fetchrow", "fetchval", "fetchrow"]
