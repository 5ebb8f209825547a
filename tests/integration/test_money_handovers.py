"""Money across the seams (issue 11, defects 1-4 and 7): what one service hands over, the next
one bills exactly, and nothing is left neither refused nor charged.

Every event crossing a boundary is the producer's own: ordering runs in-process and places orders
and quotes through its HTTP door, lifecycle runs in-process and answers ordering's events, and the
envelopes are taken from their outboxes as they wrote them, then fed to invoicing through Kafka.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.invoicing.billing import INSTALLMENT_TIMER
from shared.runtime import create_app, load_spec
from shared.time.calendar import local_midnight
from shared.topics import Topics
from tests.integration.ordering_helpers import Ordering, SettableClock, running_ordering, user
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration

Body = tuple[str, bytes]  # (event type, the envelope as written to the outbox)
INVOICE_EVENTS = ("InvoiceIssued", "PaymentFailed", "PaymentSucceeded", "InvoicePaid")


@dataclass
class Downstream:
    """One consuming service in-process, fed the producers' envelopes through its Kafka topics."""

    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    topics: Topics
    clock: SettableClock  # real time until a test sets it (and sets it back)
    app: FastAPI

    async def feed(self, producer: str, account: uuid.UUID, bodies: list[Body]) -> None:
        for _, body in bodies:
            await self.producer.send_and_wait(
                self.topics.events(producer), value=body, key=str(account).encode()
            )

    async def wait_applied(self, bodies: list[Body]) -> None:
        """Until every fed event is consumed (its inbox row) and applied (not waiting for its
        cause): a test that then moves the clock cannot overtake an event still in flight."""
        ids = [uuid.UUID(json.loads(body)["event_id"]) for _, body in bodies]

        async def applied() -> bool:
            consumed = await self.pool.fetchval(
                "SELECT count(DISTINCT event_id) FROM inbox WHERE event_id = ANY($1::uuid[])", ids
            )
            waiting = await self.pool.fetchval(
                "SELECT count(*) FROM deferred_events WHERE event_id = ANY($1::uuid[])", ids
            )
            return bool(consumed == len(ids) and waiting == 0)

        await wait_for(applied, what=f"{len(ids)} fed events applied")

    async def emitted(self, event_type: str, account: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT body FROM outbox WHERE event_type = $1 AND message_key = $2 ORDER BY id",
            event_type,
            str(account),
        )
        return [json.loads(bytes(r["body"])) for r in rows]

    async def wait_emitted(
        self, event_type: str, account: uuid.UUID, count: int = 1
    ) -> list[dict[str, Any]]:
        async def found() -> list[dict[str, Any]] | None:
            events = await self.emitted(event_type, account)
            return events if len(events) >= count else None

        return await wait_for(found, what=f"{count} {event_type} of {account}")


@contextlib.asynccontextmanager
async def running(backing: Backing, service: str) -> AsyncIterator[Downstream]:
    clock = SettableClock()
    async with deployment(backing, (service,)) as dep:
        app = create_app(load_spec(service), dep.settings(service), clock)
        async with app.router.lifespan_context(app):
            producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
            await producer.start()
            try:
                yield Downstream(app.state.runtime.pool, producer, Topics(dep.prefix), clock, app)
            finally:
                await producer.stop()


@pytest.fixture(scope="module")
async def ordering(backing: Backing) -> AsyncIterator[Ordering]:
    async with running_ordering(backing) as service:
        yield service


@pytest.fixture(scope="module")
async def invoicing(backing: Backing) -> AsyncIterator[Downstream]:
    async with running(backing, "invoicing") as service:
        yield service


@pytest.fixture(scope="module")
async def lifecycle(backing: Backing) -> AsyncIterator[Downstream]:
    async with running(backing, "lifecycle") as service:
        yield service


async def ordering_events(ordering: Ordering, account: uuid.UUID) -> list[Body]:
    rows = await ordering.pool.fetch(
        "SELECT event_type, body FROM outbox WHERE message_key = $1 ORDER BY id", str(account)
    )
    return [(str(r["event_type"]), bytes(r["body"])) for r in rows]


def only(bodies: list[Body], *event_types: str) -> list[Body]:
    return [(t, b) for t, b in bodies if t in event_types]


async def quote(
    ordering: Ordering, account: uuid.UUID, *, seats: int, term: str = "annual"
) -> dict[str, Any]:
    body = {"offering": "autocad", "term": term, "seats": seats}
    issued = await ordering.call(
        "POST", f"/v1/accounts/{account}/quotes", ("partner", uuid.uuid4()), body
    )
    assert issued.status_code == 201, issued.text
    result: dict[str, Any] = issued.json()
    return result


async def accept(
    ordering: Ordering, buyer: uuid.UUID, quote_id: str, method: str, token: str | None = None
) -> Any:
    body: dict[str, Any] = {"payment_method": method}
    if token is not None:
        body["payment_token"] = token
    return await ordering.call("POST", f"/v1/quotes/{quote_id}/acceptance", user(buyer), body)


# --- defect 2: R15 is judged once, by ordering, at order time ---------------------------------


async def test_r15_a_card_quote_ordering_accepts_is_charged_by_invoicing(
    ordering: Ordering, invoicing: Downstream
) -> None:
    """12 seats x USD 1,975 = USD 23,700 net (USD 29,625 with Norway's 25 % VAT): ordering
    accepts it by card, so invoicing charges it; it is never left neither refused nor charged."""
    account, buyer, _ = await ordering.open_account("NOK")
    quoted = await quote(ordering, account, seats=12)
    accepted = await accept(ordering, buyer, quoted["id"], "card", "tok_success")
    assert accepted.status_code == 201, accepted.text
    await invoicing.feed("ordering", account, await ordering_events(ordering, account))
    [issued] = await invoicing.wait_emitted("InvoiceIssued", account)
    assert Decimal(issued["payload"]["gross_total"]) / Decimal("10.80") > Decimal(25000)
    [paid] = await invoicing.wait_emitted("PaymentSucceeded", account)
    assert Decimal(paid["payload"]["amount"]) == Decimal(issued["payload"]["gross_total"])
    assert await invoicing.emitted("PaymentFailed", account) == []


async def test_r15_a_card_quote_above_the_limit_is_refused_at_order_time_and_never_placed(
    ordering: Ordering,
) -> None:
    account, buyer, _ = await ordering.open_account("NOK")
    quoted = await quote(ordering, account, seats=13)  # USD 25,675 net
    refused = await accept(ordering, buyer, quoted["id"], "paypal")
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("card-limit-exceeded")
    assert only(await ordering_events(ordering, account), "OrderPlaced") == []


# --- defect 3: the invoice of an accepted quote is the quote (R16) ---------------------------


async def test_r16_r19_an_accepted_quote_is_invoiced_at_its_quoted_price_not_the_rate_of_the_day(
    ordering: Ordering, invoicing: Downstream
) -> None:
    """The partner rate of the day has moved (R19) since the quote; the invoice is the quote."""
    account, buyer, _ = await ordering.open_account("NOK")
    quoted = await quote(ordering, account, seats=3)
    await invoicing.pool.execute(
        """INSERT INTO applied_rates (currency, channel, effective_from, rate, previous_rate,
               market_rate, quarter_start, computed_at)
           VALUES ('NOK', 'partner', $1, 11.124, 10.80, 11.50, $2, $1)
           ON CONFLICT DO NOTHING""",
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2000, 1, 1).date(),
    )
    accepted = await accept(ordering, buyer, quoted["id"], "invoice")
    assert accepted.status_code == 201, accepted.text
    await invoicing.feed("ordering", account, await ordering_events(ordering, account))
    [issued] = await invoicing.wait_emitted("InvoiceIssued", account)
    invoice = issued["payload"]
    assert Decimal(invoice["net_total"]) == Decimal(str(quoted["net_amount"]))
    [line] = invoice["lines"]
    assert line["quantity"] == 3
    assert Decimal(line["net_amount"]) == Decimal(str(quoted["net_amount"]))
    assert Decimal(invoice["vat_total"]) == Decimal(str(quoted["net_amount"])) * Decimal("0.25")


async def test_r16_r20_a_quoted_three_year_term_is_invoiced_in_thirds_of_the_quote(
    ordering: Ordering, invoicing: Downstream
) -> None:
    account, buyer, _ = await ordering.open_account("EUR")
    quoted = await quote(ordering, account, seats=2, term="three_year")
    accepted = await accept(ordering, buyer, quoted["id"], "invoice")
    assert accepted.status_code == 201, accepted.text
    await invoicing.feed("ordering", account, await ordering_events(ordering, account))
    [issued] = await invoicing.wait_emitted("InvoiceIssued", account)
    quoted_unit = Decimal(str(quoted["net_amount"])) / 2
    [line] = issued["payload"]["lines"]
    assert Decimal(line["unit_price"]) == (quoted_unit / 3).quantize(Decimal("0.01"))
    timers = await invoicing.pool.fetch(
        "SELECT payload FROM timers WHERE kind = $1 AND payload ->> 'subscription_id' = $2",
        INSTALLMENT_TIMER,
        accepted.json()["subscription_id"],
    )
    assert [Decimal(json.loads(t["payload"])["quoted_unit_price"]) for t in timers] == [
        quoted_unit,
        quoted_unit,
    ]


# --- defect 4: installments stop with the subscription (R20, R34, R39) -----------------------


async def three_year_subscription(
    ordering: Ordering, invoicing: Downstream
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, dict[str, Any]]:
    """A three-year AutoCAD bought by card: invoiced, installments 2 and 3 pending (R20)."""
    account, buyer, _ = await ordering.open_account("NOK")
    placed = await ordering.order(account, buyer, term="three_year", payment_token="tok_success")
    subscription = uuid.UUID(placed["subscription_id"])
    await invoicing.feed("ordering", account, await ordering_events(ordering, account))
    await invoicing.wait_emitted("PaymentSucceeded", account)
    assert await pending_installments(invoicing, subscription) == 2
    return account, buyer, subscription, placed


async def pending_installments(invoicing: Downstream, subscription: uuid.UUID) -> int:
    return int(
        await invoicing.pool.fetchval(
            """SELECT count(*) FROM timers WHERE kind = $1 AND status = 'pending'
                   AND payload ->> 'subscription_id' = $2""",
            INSTALLMENT_TIMER,
            str(subscription),
        )
    )


async def test_r20_r34_a_cancelled_three_year_subscription_gets_no_more_installments(
    ordering: Ordering, invoicing: Downstream, lifecycle: Downstream
) -> None:
    """Lifecycle's own Cancelled (here after a refund it handled) reaches invoicing, which has
    not seen the refund: the pending installments are cancelled all the same."""
    account, buyer, subscription, placed = await three_year_subscription(ordering, invoicing)
    renews_at = (datetime.now(UTC) + timedelta(days=3 * 365)).replace(microsecond=0)
    await ordering.activate(account, placed, renews_at, term="three_year")
    refunded = await ordering.call(
        "POST", f"/v1/subscriptions/{subscription}/refunds", user(buyer), {"reason": "mistake"}
    )
    assert refunded.status_code == 201, refunded.text
    events = await ordering_events(ordering, account)
    await lifecycle.feed("ordering", account, events)
    [cancelled] = await lifecycle.wait_emitted("StageChanged", account)
    assert cancelled["payload"]["to_stage"] == "cancelled"
    body = json.dumps(cancelled).encode()
    await invoicing.feed("lifecycle", account, [("StageChanged", body)])

    async def stopped() -> bool:
        return await pending_installments(invoicing, subscription) == 0

    assert await wait_for(stopped, what="the installments cancelled")
    issued = await invoicing.emitted("InvoiceIssued", account)
    assert [i["payload"]["installment"] for i in issued] == [1]


async def test_r20_r39_a_refunded_three_year_subscription_gets_no_more_installments(
    ordering: Ordering, invoicing: Downstream
) -> None:
    account, buyer, subscription, placed = await three_year_subscription(ordering, invoicing)
    renews_at = (datetime.now(UTC) + timedelta(days=3 * 365)).replace(microsecond=0)
    await ordering.activate(account, placed, renews_at, term="three_year")
    refunded = await ordering.call(
        "POST", f"/v1/subscriptions/{subscription}/refunds", user(buyer), {"reason": "mistake"}
    )
    assert refunded.status_code == 201, refunded.text
    events = await ordering_events(ordering, account)
    await invoicing.feed("ordering", account, only(events, "RefundApproved"))
    await invoicing.wait_emitted("CreditNoteIssued", account)
    assert await pending_installments(invoicing, subscription) == 0


# --- defect 1: a declined first purchase does not keep a free term (R31, R37) ----------------


async def invoicing_events(invoicing: Downstream, account: uuid.UUID, *types: str) -> list[Body]:
    rows = await invoicing.pool.fetch(
        """SELECT event_type, body FROM outbox
           WHERE message_key = $1 AND event_type = ANY($2::text[]) ORDER BY id""",
        str(account),
        list(types),
    )
    return [(str(r["event_type"]), bytes(r["body"])) for r in rows]


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


async def test_r31_r37_a_declined_first_purchase_lapses_from_its_due_date_and_is_retried(
    ordering: Ordering, invoicing: Downstream, lifecycle: Downstream
) -> None:
    """A direct order by a declining card: invoicing retries the order charge on the R37 days
    (one rule for every card/PayPal charge), and lifecycle, told by invoicing's PaymentFailed
    that the invoice is unpaid on its due date (the issue day, R21), starts the R31 process when
    that day ends: Expired (R32), not a full paid term."""
    account, buyer, _ = await ordering.open_account("NOK")
    placed = await ordering.order(account, buyer, payment_token="tok_decline")
    subscription = uuid.UUID(placed["subscription_id"])
    events = await ordering_events(ordering, account)
    await invoicing.feed("ordering", account, events)
    [issued] = await invoicing.wait_emitted("InvoiceIssued", account)
    [failed] = await invoicing.wait_emitted("PaymentFailed", account)
    first_failed_at = at(failed["payload"]["failed_at"])
    assert failed["payload"]["purpose"] == "order"
    assert at(failed["payload"]["next_attempt_at"]) == first_failed_at + timedelta(days=1)

    await lifecycle.feed("ordering", account, events)
    await lifecycle.feed(
        "invoicing", account, await invoicing_events(invoicing, account, *INVOICE_EVENTS)
    )
    await lifecycle.wait_emitted("SubscriptionActivated", account)
    invoice_id = issued["payload"]["invoice_id"]

    async def overdue_timer() -> datetime | None:
        due: datetime | None = await lifecycle.pool.fetchval(
            "SELECT due_at FROM timers WHERE kind = 'invoice-overdue' AND timer_key = $1",
            invoice_id,
        )
        return due

    overdue_at = await wait_for(overdue_timer, what="lifecycle's R31 timer of the invoice")
    due_date = datetime.fromisoformat(issued["payload"]["due_date"]).date()
    assert overdue_at == local_midnight(due_date + timedelta(days=1), "Europe/Oslo")
    assert await lifecycle.emitted("StageChanged", account) == []  # Active until the due date ends

    try:
        lifecycle.clock.at = overdue_at + timedelta(seconds=1)
        [expired] = await lifecycle.wait_emitted("StageChanged", account)
        assert expired["subscription_id"] == str(subscription)
        assert expired["payload"]["to_stage"] == "expired"
        assert expired["payload"]["reason"] == "invoice_unpaid"
        assert at(expired["payload"]["effective_at"]) == overdue_at

        invoicing.clock.at = at(failed["payload"]["next_attempt_at"]) + timedelta(seconds=1)
        retried = (await invoicing.wait_emitted("PaymentFailed", account, count=2))[1]
        assert retried["payload"]["attempt"] == 2
        assert at(retried["payload"]["next_attempt_at"]) == first_failed_at + timedelta(days=3)
    finally:
        lifecycle.clock.at = invoicing.clock.at = None
    assert await invoicing.emitted("PaymentSucceeded", account) == []


# --- defect 7: a trial is a short look, not a free term (R17) ---------------------------------


async def test_r17_a_trial_has_a_bounded_size_and_length_and_ends_without_the_grace_stages(
    ordering: Ordering, invoicing: Downstream, lifecycle: Downstream
) -> None:
    """Ordering refuses a trial above 5 seats; lifecycle gives an annual trial 30 days (not a
    year), and at its end the trial is Cancelled with no access, never Expired with 15 more
    days of it (R32 is for paid terms). Nothing is invoiced (R17)."""
    account, buyer, _ = await ordering.open_account("NOK")
    body = {"offering": "autocad", "term": "three_year", "seats": 6, "payment_method": "card"}
    refused = await ordering.call(
        "POST", f"/v1/accounts/{account}/orders", user(buyer), {**body, "trial": True}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("trial-too-large")
    assert only(await ordering_events(ordering, account), "OrderPlaced") == []

    placed = await ordering.order(account, buyer, term="annual", seats=5, trial=True)
    events = await ordering_events(ordering, account)
    await invoicing.feed("ordering", account, events)
    await lifecycle.feed("ordering", account, events)
    [activated] = await lifecycle.wait_emitted("SubscriptionActivated", account)
    started = at(activated["payload"]["starts_at"])
    renews_at = at(activated["payload"]["renews_at"])
    start_day = started.astimezone(ZoneInfo("Europe/Oslo")).date()
    assert renews_at == local_midnight(start_day + timedelta(days=30), "Europe/Oslo")
    assert activated["payload"]["trial"] is True

    try:
        lifecycle.clock.at = renews_at + timedelta(seconds=1)
        [ended] = await lifecycle.wait_emitted("StageChanged", account)
    finally:
        lifecycle.clock.at = None
    assert ended["subscription_id"] == placed["subscription_id"]
    assert (ended["payload"]["from_stage"], ended["payload"]["to_stage"]) == ("active", "cancelled")
    assert ended["payload"]["reason"] == "trial_ended"
    assert ended["payload"]["entitlements"]["product_access"] == "none"
    assert at(ended["payload"]["effective_at"]) == renews_at

    async def invoicing_knows_it() -> bool:
        return bool(
            await invoicing.pool.fetchval(
                "SELECT true FROM subscriptions WHERE id = $1",
                uuid.UUID(placed["subscription_id"]),
            )
        )

    await wait_for(invoicing_knows_it, what="invoicing handled the trial's OrderPlaced")
    assert await invoicing.emitted("InvoiceIssued", account) == []


# --- defect 5: a late renewal after a failed renewal charge charges the new method (R27, R37) -


async def lifecycle_events(lifecycle: Downstream, account: uuid.UUID, *types: str) -> list[Body]:
    rows = await lifecycle.pool.fetch(
        """SELECT event_type, body FROM outbox
           WHERE message_key = $1 AND event_type = ANY($2::text[]) ORDER BY id""",
        str(account),
        list(types),
    )
    return [(str(r["event_type"]), bytes(r["body"])) for r in rows]


async def test_r27_r37_a_late_renewal_after_a_declined_renewal_charges_its_new_card_once(
    ordering: Ordering, invoicing: Downstream, lifecycle: Downstream
) -> None:
    """The renewal charge is declined (Expired, retries on the old card); the buyer renews late
    with a new card: the open renewal invoice is charged with it at once, the subscription is
    Active again, and there is exactly one renewal invoice and no retry left."""
    account, buyer, _ = await ordering.open_account("NOK")
    placed = await ordering.order(account, buyer, payment_token="tok_decline")
    subscription = placed["subscription_id"]
    await invoicing.feed("ordering", account, await ordering_events(ordering, account))
    [order_invoice] = await invoicing.wait_emitted("InvoiceIssued", account)
    await invoicing.wait_emitted("PaymentFailed", account)
    # The order is paid by bank transfer (the operator's door); the card on file still declines.
    operator = ordering.auth(("operator", uuid.uuid4()))
    transport = httpx.ASGITransport(app=invoicing.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://invoicing") as client:
        paid = await client.post(
            f"/v1/operator/invoices/{order_invoice['payload']['invoice_id']}/bank-payments",
            json={"amount": order_invoice["payload"]["gross_total"], "reference": "transfer"},
            headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
        )
    assert paid.status_code == 201, paid.text
    await invoicing.wait_emitted("InvoicePaid", account)
    await lifecycle.feed("ordering", account, await ordering_events(ordering, account))
    invoice_events = await invoicing_events(invoicing, account, *INVOICE_EVENTS)
    await lifecycle.feed("invoicing", account, invoice_events)
    [activated] = await lifecycle.wait_emitted("SubscriptionActivated", account)
    # The payment must be applied before the clock jumps a year, or the R31 timer of the
    # declined first charge fires first (it did once, when InvoicePaid was retried).
    await lifecycle.wait_applied(only(invoice_events, "InvoicePaid"))
    renews_at = at(activated["payload"]["renews_at"])
    try:
        for clock in (lifecycle.clock, invoicing.clock, ordering.clock):
            clock.at = renews_at + timedelta(hours=1)
        [due] = await lifecycle.wait_emitted("RenewalDue", account)
        await invoicing.feed("lifecycle", account, [("RenewalDue", json.dumps(due).encode())])
        failures = await invoicing.wait_emitted("PaymentFailed", account, count=2)
        assert failures[-1]["payload"]["purpose"] == "renewal"
        await lifecycle.feed(
            "invoicing",
            account,
            only(
                await invoicing_events(invoicing, account, *INVOICE_EVENTS),
                "InvoiceIssued",
                "PaymentFailed",
            ),
        )
        [expired] = await lifecycle.wait_emitted("StageChanged", account)
        assert expired["payload"]["to_stage"] == "expired"
        for _, body in await lifecycle_events(
            lifecycle, account, "SubscriptionActivated", "StageChanged"
        ):
            await ordering.producer.send_and_wait(
                ordering.topics.events("lifecycle"), value=body, key=str(account).encode()
            )
        await ordering.wait_projection(uuid.UUID(subscription), "stage", "expired")

        for clock in (lifecycle.clock, invoicing.clock, ordering.clock):
            clock.at = renews_at + timedelta(days=2)
        late = await ordering.call(
            "POST",
            f"/v1/subscriptions/{subscription}/renewals",
            user(buyer),
            {"payment_method": "card", "payment_token": "tok_success"},
        )
        assert late.status_code == 201, late.text
        requested = only(await ordering_events(ordering, account), "RenewalRequested")
        await invoicing.feed("ordering", account, requested)
        await lifecycle.feed("ordering", account, requested)
        dues = await lifecycle.wait_emitted("RenewalDue", account, count=2)
        assert dues[1]["payload"]["renewal_id"] == dues[0]["payload"]["renewal_id"]
        await invoicing.feed("lifecycle", account, [("RenewalDue", json.dumps(dues[1]).encode())])
        [_, renewal_paid] = await invoicing.wait_emitted("InvoicePaid", account, count=2)
    finally:
        for clock in (lifecycle.clock, invoicing.clock, ordering.clock):
            clock.at = None
    assert renewal_paid["payload"]["purpose"] == "renewal"
    issued = await invoicing.emitted("InvoiceIssued", account)
    assert [i["payload"]["purpose"] for i in issued] == ["order", "renewal"]
    assert renewal_paid["payload"]["invoice_id"] == issued[1]["payload"]["invoice_id"]
    [succeeded] = [
        s
        for s in await invoicing.emitted("PaymentSucceeded", account)
        if s["payload"]["method"] == "card"
    ]
    assert Decimal(succeeded["payload"]["amount"]) == Decimal(issued[1]["payload"]["gross_total"])
    retries = await invoicing.pool.fetchval(
        "SELECT count(*) FROM timers WHERE kind = 'renewal_charge_retry' AND status = 'pending'"
        " AND timer_key = $1",
        issued[1]["payload"]["invoice_id"],
    )
    assert retries == 0
