"""Invoicing's use cases through ``service.py`` with an in-memory repository, recorded events and
a fixed time: no database, no Kafka (the card and PayPal sandboxes are the gateway adapters)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.invoicing import domain, service
from services.invoicing.billing import INSTALLMENT_TIMER, RETRY_TIMER, UnitOfWork
from services.invoicing.commands import BankTransfer, Cause, RetryDue
from services.invoicing.domain import PurchaseOrder
from services.invoicing.exchange_rates import AppliedRate
from services.invoicing.models import (
    Account,
    AppliedRateRecord,
    Buyer,
    ChargeAttempt,
    CreditNote,
    Invoice,
    MarketRate,
    Payment,
    SavedMethod,
    StoredLine,
    Subscription,
    Timer,
)
from shared.auth import Principal
from shared.contracts import (
    AccountOpened,
    BillingIdentity,
    InvoiceLine,
    OrderPlaced,
    PaymentMethod,
    PricedLine,
    RefundApproved,
    RenewalDue,
    RenewalRequested,
    RolesChanged,
    TrialConverted,
)
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.messaging import WaitForCause
from shared.time.clock import FrozenClock
from shared.unit_of_work import FixedTime, RecordedEvents

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def stored(line: InvoiceLine) -> StoredLine:
    return StoredLine(
        line.description,
        line.quantity,
        line.unit_price,
        line.net_amount,
        line.vat_rate,
        line.vat_amount,
    )


class InMemoryRepository:
    """The ``Repository`` port on dictionaries."""

    def __init__(self) -> None:
        self.accounts: dict[uuid.UUID, Account] = {}
        self.billing: dict[uuid.UUID, BillingIdentity] = {}
        self.roles: dict[tuple[uuid.UUID, uuid.UUID], set[str]] = {}
        self.emails: dict[tuple[uuid.UUID, str], str] = {}
        self.subscriptions: dict[uuid.UUID, Subscription] = {}
        self.invoices: dict[uuid.UUID, Invoice] = {}
        self.sources: dict[str, uuid.UUID] = {}
        self.lines: dict[uuid.UUID, list[StoredLine]] = {}
        self.orders: dict[uuid.UUID, PurchaseOrder] = {}
        self.series: dict[str, int] = {}
        self.attempts: list[ChargeAttempt] = []
        self.payments: dict[uuid.UUID, Payment] = {}
        self.notes: dict[uuid.UUID, CreditNote] = {}
        self.timers: dict[tuple[str, str], Timer] = {}
        self.market: list[tuple[MarketRate, str]] = []
        self.applied: list[AppliedRateRecord] = []
        self.methods: dict[uuid.UUID, SavedMethod] = {}

    async def get_account(self, account_id: uuid.UUID) -> Account | None:
        return self.accounts.get(account_id)

    async def require_prepayment(self, account_id: uuid.UUID) -> None:
        self.accounts[account_id] = dataclasses.replace(self.accounts[account_id], prepay_only=True)

    async def billing_identity(self, account_id: uuid.UUID) -> BillingIdentity | None:
        return self.billing.get(account_id)

    async def set_billing_identity(self, account_id: uuid.UUID, identity: BillingIdentity) -> None:
        self.billing[account_id] = identity

    async def upsert_account(self, account_id: uuid.UUID, opened: AccountOpened) -> None:
        self.accounts[account_id] = Account(
            account_id,
            opened.country,
            opened.currency,
            opened.language,
            opened.time_zone,
            opened.tax_exempt_reason,
            opened.name,
            opened.test_clock_id,
        )

    async def apply_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None:
        people = [(snapshot.buyer, "buyer"), (snapshot.primary_admin, "admin")]
        people += [(payer, "payer") for payer in snapshot.payers]
        for person, role in people:
            self.roles.setdefault((account_id, person.user_id), set()).add(role)
            self.emails[(account_id, person.email)] = role

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        return set(self.roles.get((account_id, user_id), set()))

    async def payer_emails(self, account_id: uuid.UUID) -> list[str]:
        return [e for (a, e), role in self.emails.items() if a == account_id and role == "payer"]

    async def buyer_of(self, account_id: uuid.UUID) -> Buyer | None:
        found = [e for (a, e), r in self.emails.items() if a == account_id and r == "buyer"]
        return Buyer("Kari Nordmann", found[0]) if found else None

    async def upsert_subscription(self, account_id: uuid.UUID, order: OrderPlaced) -> None:
        self.subscriptions[order.subscription_id] = Subscription(
            order.subscription_id,
            account_id,
            order.order_id,
            order.offering,
            order.term,
            order.seats,
            order.channel,
            order.payment_method,
            order.payment_token,
            order.currency,
            order.billing_country,
            order.time_zone,
            order.trial,
            None,
            None,
            None,
            None,
            None,
        )

    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None:
        return self.subscriptions.get(subscription_id)

    async def update_subscription(self, subscription_id: uuid.UUID, **fields: object) -> None:
        sub = self.subscriptions[subscription_id]
        self.subscriptions[subscription_id] = dataclasses.replace(sub, **fields)  # type: ignore[arg-type]

    async def set_renewal_purchase_order(
        self, subscription_id: uuid.UUID, po: PurchaseOrder
    ) -> None:
        self.subscriptions[subscription_id] = dataclasses.replace(
            self.subscriptions[subscription_id],
            renewal_po_number=po.po_number,
            renewal_notes=po.notes,
            renewal_po_document=po.document,
            renewal_po_file_name=po.file_name,
            renewal_po_mime_type=po.mime_type,
        )

    async def next_in_series(self, series: str) -> int:
        self.series[series] = self.series.get(series, 0) + 1
        return self.series[series]

    async def invoice_id_for_source(self, source_key: str) -> uuid.UUID | None:
        return self.sources.get(source_key)

    async def insert_invoice(
        self, invoice: Invoice, *, source_key: str, lines: list[InvoiceLine], po: PurchaseOrder
    ) -> None:
        self.invoices[invoice.id] = invoice
        self.sources[source_key] = invoice.id
        self.lines[invoice.id] = [stored(line) for line in lines]
        self.orders[invoice.id] = po

    async def get_invoice(self, invoice_id: uuid.UUID) -> Invoice | None:
        return self.invoices.get(invoice_id)

    async def lock_invoice(self, invoice_id: uuid.UUID) -> Invoice | None:
        return self.invoices.get(invoice_id)

    async def invoice_lines(self, invoice_id: uuid.UUID) -> list[StoredLine]:
        return self.lines.get(invoice_id, [])

    async def list_invoices(self, account_id: uuid.UUID) -> list[Invoice]:
        return [i for i in self.invoices.values() if i.account_id == account_id]

    async def purchase_invoice(
        self, subscription_id: uuid.UUID, purchase_kind: str, statuses: tuple[str, ...]
    ) -> Invoice | None:
        found = [
            i
            for i in self.invoices.values()
            if i.subscription_id == subscription_id
            and i.purpose == purchase_kind
            and i.status in statuses
        ]
        return max(found, key=lambda i: (i.issued_at, i.invoice_number), default=None)

    async def purchase_order(self, invoice_id: uuid.UUID) -> PurchaseOrder:
        return self.orders.get(invoice_id, PurchaseOrder())

    async def update_purchase_order(self, invoice_id: uuid.UUID, po: PurchaseOrder) -> None:
        self.orders[invoice_id] = po
        self.invoices[invoice_id] = dataclasses.replace(
            self.invoices[invoice_id],
            po_number=po.po_number,
            notes=po.notes,
            po_file_name=po.file_name,
            po_mime_type=po.mime_type,
        )

    async def mark_credited(self, invoice_id: uuid.UUID) -> None:
        self.invoices[invoice_id] = dataclasses.replace(
            self.invoices[invoice_id], status="credited"
        )

    async def open_renewal_invoices(self, subscription_id: uuid.UUID) -> list[uuid.UUID]:
        return [
            i.id
            for i in self.invoices.values()
            if i.subscription_id == subscription_id
            and i.purpose == "renewal"
            and i.status == "issued"
            and i.payment_method in ("card", "paypal")
        ]

    async def open_gateway_invoices(self, subscription_id: uuid.UUID) -> list[uuid.UUID]:
        return [
            i.id
            for i in sorted(self.invoices.values(), key=lambda i: i.invoice_number)
            if i.subscription_id == subscription_id
            and i.status == "issued"
            and i.payment_method in ("card", "paypal")
        ]

    async def insert_payment_method(self, method: SavedMethod) -> None:
        self.methods[method.id] = dataclasses.replace(method, is_default=False)
        if method.is_default:
            await self.set_default_payment_method(method.account_id, method.id)

    async def payment_methods(self, account_id: uuid.UUID) -> list[SavedMethod]:
        return [
            m for m in self.methods.values() if m.account_id == account_id and m.removed_at is None
        ]

    async def get_payment_method(self, method_id: uuid.UUID) -> SavedMethod | None:
        return self.methods.get(method_id)

    async def set_default_payment_method(self, account_id: uuid.UUID, method_id: uuid.UUID) -> None:
        for m in list(self.methods.values()):
            if m.account_id == account_id:
                self.methods[m.id] = dataclasses.replace(m, is_default=m.id == method_id)

    async def remove_payment_method(self, method_id: uuid.UUID, at: datetime) -> None:
        m = self.methods[method_id]
        self.methods[method_id] = dataclasses.replace(m, removed_at=at, is_default=False)

    async def live_gateway_subscriptions(self, account_id: uuid.UUID) -> list[Subscription]:
        return [
            s
            for s in self.subscriptions.values()
            if s.account_id == account_id
            and not s.cancelled
            and not s.trial
            and s.payment_method in ("card", "paypal")
        ]

    async def record_charge_attempt(self, attempt: ChargeAttempt) -> None:
        self.attempts.append(attempt)

    async def charge_attempts(self, invoice_id: uuid.UUID) -> list[ChargeAttempt]:
        return sorted(
            (a for a in self.attempts if a.invoice_id == invoice_id), key=lambda a: a.attempt
        )

    async def set_invoice_payment(
        self, invoice_id: uuid.UUID, method: PaymentMethod, token: str | None
    ) -> None:
        self.invoices[invoice_id] = dataclasses.replace(
            self.invoices[invoice_id], payment_method=method, payment_token=token
        )

    async def record_payment(self, payment: Payment) -> None:
        self.payments[payment.invoice_id] = payment
        self.invoices[payment.invoice_id] = dataclasses.replace(
            self.invoices[payment.invoice_id], status="paid", paid_at=payment.paid_at
        )

    async def payment_of(self, invoice_id: uuid.UUID) -> Payment | None:
        return self.payments.get(invoice_id)

    async def credit_note_for_refund(self, refund_id: uuid.UUID) -> uuid.UUID | None:
        return next((n.id for n in self.notes.values() if n.refund_id == refund_id), None)

    async def insert_credit_note(self, note: CreditNote, lines: list[InvoiceLine]) -> None:
        self.notes[note.id] = note
        self.lines[note.id] = [stored(line) for line in lines]

    async def get_credit_note(self, credit_note_id: uuid.UUID) -> CreditNote | None:
        return self.notes.get(credit_note_id)

    async def credit_note_lines(self, credit_note_id: uuid.UUID) -> list[StoredLine]:
        return self.lines.get(credit_note_id, [])

    async def list_credit_notes(self, account_id: uuid.UUID) -> list[CreditNote]:
        return [n for n in self.notes.values() if n.account_id == account_id]

    async def schedule_timer(self, timer: Timer) -> None:
        self.timers[(timer.kind, timer.key)] = timer  # as shared.timers: (kind, key) moves

    async def cancel_timer(self, kind: str, key: str, *, wait: bool = True) -> None:
        self.timers.pop((kind, key), None)

    async def cancel_subscription_timers(self, kind: str, subscription_id: uuid.UUID) -> int:
        gone = [
            k
            for k, t in self.timers.items()
            if t.kind == kind and (t.payload or {}).get("subscription_id") == str(subscription_id)
        ]
        for k in gone:
            del self.timers[k]
        return len(gone)

    async def timer_known(self, kind: str, key: str) -> bool:
        return (kind, key) in self.timers

    async def insert_market_rates(
        self, rates: list[MarketRate], source: str, recorded_at: datetime
    ) -> None:
        self.market += [(r, source) for r in rates]

    async def latest_market_rate(self, currency: str, before: date) -> Decimal | None:
        found = [r for r, _ in self.market if r.currency == currency and r.as_of < before]
        return max(found, key=lambda r: r.as_of).rate if found else None

    async def applied_rate_before(
        self, currency: str, channel: str, at: datetime, *, inclusive: bool = True
    ) -> Decimal | None:
        found = [
            r
            for r in self.applied
            if r.currency == currency
            and r.channel == channel
            and (r.effective_from <= at if inclusive else r.effective_from < at)
        ]
        return max(found, key=lambda r: r.effective_from).rate if found else None

    async def insert_applied_rates(
        self, currency: str, quarter: date, rates: list[AppliedRate], computed_at: datetime
    ) -> list[AppliedRate]:
        for r in rates:
            self.applied.append(
                AppliedRateRecord(
                    currency,
                    r.channel,
                    r.effective_from,
                    r.rate,
                    r.previous_rate,
                    r.market_rate,
                    quarter,
                    computed_at,
                )
            )
        return rates

    async def applied_rate_history(
        self, currency: str | None, channel: str | None
    ) -> list[AppliedRateRecord]:
        return [
            r
            for r in self.applied
            if (currency is None or r.currency == currency)
            and (channel is None or r.channel == channel)
        ]


# --- a world to run the use cases in ------------------------------------------------------------


class World:
    def __init__(self) -> None:
        self.clock = FrozenClock(NOW)
        self.repo = InMemoryRepository()
        self.events = RecordedEvents("invoicing", self.clock)
        self.uow = UnitOfWork(self.repo, self.events, FixedTime(self.clock))
        self.account = uuid.uuid4()
        self.buyer, self.admin, self.payer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def cause(self, subscription: uuid.UUID | None = None) -> Cause:
        return Cause(self.account, subscription, self.clock.now())

    def payloads(self, event_type: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events.emitted if e.event_type == event_type]

    def actor(self, subject: uuid.UUID | None = None, kind: str = "user") -> Principal:
        return Principal(subject or uuid.uuid4(), kind, None)  # type: ignore[arg-type]

    async def opened(self, exempt: str | None = None) -> None:
        from shared.contracts import Person

        def person(user: uuid.UUID, role: str) -> Person:
            return Person(user_id=user, email=f"{role}@example.com", name=role, language="nb")

        opened = AccountOpened(
            name="Fjordbygg AS",
            country="NO",
            currency="NOK",
            language="nb",
            time_zone="Europe/Oslo",
            tax_exempt_reason=exempt,
        )
        await service.remember_account(self.uow, self.cause(), opened)
        roles = RolesChanged(
            buyer=person(self.buyer, "buyer"),
            primary_admin=person(self.admin, "admin"),
            payers=[person(self.payer, "payer")],
        )
        await service.remember_roles(self.uow, self.cause(), roles)

    async def ordered(self, **fields: Any) -> OrderPlaced:
        values: dict[str, Any] = {
            "order_id": uuid.uuid4(),
            "order_number": "ORD-1",
            "subscription_id": uuid.uuid4(),
            "offering": "autocad",
            "term": "annual",
            "seats": 2,
            "payment_method": "card",
            "channel": "direct",
            "billing_country": "NO",
            "currency": "NOK",
            "time_zone": "Europe/Oslo",
            "placed_at": self.clock.now(),
            "buyer_email": "buyer@example.com",
            **fields,
        }
        order = OrderPlaced(**values)
        await service.invoice_order(self.uow, self.cause(order.subscription_id), order)
        return order


@pytest.fixture
async def world() -> World:
    w = World()
    await w.opened()
    return w


def renewal_due(method: str = "card") -> RenewalDue:
    return RenewalDue(
        renewal_id=uuid.uuid4(),
        offering="autocad",
        term="annual",
        seats=2,
        payment_method=method,
        channel="direct",
        time_zone="Europe/Oslo",
        period_starts_at=NOW,
        period_ends_at=NOW + timedelta(days=365),
    )


# --- ordering, trials, renewals -------------------------------------------------------------------


async def test_r21_a_card_order_is_invoiced_and_charged_at_issue(world: World) -> None:
    order = await world.ordered()
    assert world.events.types() == ["InvoiceIssued", "PaymentSucceeded", "InvoicePaid"]
    [issued] = world.payloads("InvoiceIssued")
    assert issued["order_id"] == str(order.order_id)
    assert issued["due_date"] == "2026-06-01"  # card: due at issue
    assert issued["payer_emails"] == ["payer@example.com"]  # R7
    assert issued["invoice_number"] == "INV-0000001"


async def test_r21_pay_by_invoice_is_due_in_30_days_and_not_charged(world: World) -> None:
    await world.ordered(payment_method="invoice")
    assert world.events.types() == ["InvoiceIssued"]
    assert world.payloads("InvoiceIssued")[0]["due_date"] == "2026-07-01"


async def test_r17_a_trial_is_invoiced_only_when_it_converts(world: World) -> None:
    order = await world.ordered(trial=True)
    assert world.events.types() == []
    converted = TrialConverted(
        order_id=uuid.uuid4(),
        order_number="ORD-2",
        term="annual",
        seats=3,
        payment_method="card",
        converted_at=NOW,
    )
    await service.invoice_converted_trial(world.uow, world.cause(order.subscription_id), converted)
    assert world.events.types() == ["InvoiceIssued", "PaymentSucceeded", "InvoicePaid"]
    assert world.repo.subscriptions[order.subscription_id].trial is False


async def test_a_redelivered_order_is_invoiced_and_charged_once(world: World) -> None:
    order = await world.ordered()
    await service.invoice_order(world.uow, world.cause(order.subscription_id), order)
    assert world.events.types().count("InvoiceIssued") == 1
    assert len(world.repo.attempts) == 1


async def test_an_event_before_its_order_waits_for_the_subscription(world: World) -> None:
    """The renewal of a subscription invoicing has not seen yet waits for its OrderPlaced."""
    unknown = uuid.uuid4()
    with pytest.raises(WaitForCause) as waiting:
        await service.invoice_renewal(world.uow, world.cause(unknown), renewal_due())
    assert waiting.value.cause == f"subscription:{unknown}"
    assert world.events.types() == []


async def test_r34_r36_after_a_cancellation_on_unpaid_credit_other_renewals_are_due_at_issue(
    world: World,
) -> None:
    """Issue 11, defect 6: the account's other subscriptions no longer renew on 30 days' credit
    once one was cancelled on an unpaid invoice (also straight from Active, R36)."""
    lapsed = await world.ordered(payment_method="invoice")
    other = await world.ordered(payment_method="invoice")
    assert domain.cancelled_on_unpaid_credit("invoice_unpaid")
    assert not domain.cancelled_on_unpaid_credit("suspended_period_ended")
    await service.stop_charging_cancelled(
        world.uow, world.cause(lapsed.subscription_id), lapsed_unpaid=True
    )
    due = renewal_due(method="invoice")
    await service.invoice_renewal(world.uow, world.cause(other.subscription_id), due)
    [renewal] = [i for i in world.repo.invoices.values() if i.purpose == "renewal"]
    assert renewal.due_date == renewal.issued_at.date()  # prepay: no credit (R34)
    assert renewal.due_date.isoformat() == "2026-06-01"


async def test_r25_r22_a_renewal_carries_the_po_given_before_it(world: World) -> None:
    order = await world.ordered(payment_method="invoice")
    buyer = world.actor(world.buyer)
    po = PurchaseOrder(po_number="PO-RENEW-9")
    await service.set_renewal_purchase_order(world.uow, buyer, order.subscription_id, po)
    due = renewal_due(method="invoice")
    await service.invoice_renewal(world.uow, world.cause(order.subscription_id), due)
    [renewal] = [i for i in world.repo.invoices.values() if i.purpose == "renewal"]
    assert (renewal.po_number, renewal.renewal_id) == ("PO-RENEW-9", due.renewal_id)
    assert world.repo.subscriptions[order.subscription_id].renewal_po_number is None  # once


async def test_r37_a_declined_renewal_is_retried_a_day_later_and_stops_once_paid(
    world: World,
) -> None:
    order = await world.ordered(payment_token="tok_decline")
    await service.invoice_renewal(world.uow, world.cause(order.subscription_id), renewal_due())
    failed = world.payloads("PaymentFailed")[-1]
    assert (failed["purpose"], failed["attempt"], failed["reason"]) == (
        "renewal",
        1,
        "card_declined",
    )
    invoice_id = uuid.UUID(failed["invoice_id"])
    # (the declined order has its own retry since issue 11: only the renewal's is looked at)
    [retry] = [
        t for t in world.repo.timers.values() if t.kind == RETRY_TIMER and t.key == str(invoice_id)
    ]
    assert retry.due_at == NOW + timedelta(days=1)
    # The card is fixed; the retry charges it and the retry timer is gone.
    world.repo.invoices[invoice_id] = dataclasses.replace(
        world.repo.invoices[invoice_id], payment_token="tok_success"
    )
    due = RetryDue(invoice_id, 2, NOW)
    await service.retry_charge(world.uow, due, retry.due_at)
    assert world.repo.invoices[invoice_id].status == "paid"
    assert not [
        t for t in world.repo.timers.values() if t.kind == RETRY_TIMER and t.key == str(invoice_id)
    ]


async def test_r20_a_three_year_term_pays_its_first_installment_and_schedules_two(
    world: World,
) -> None:
    await world.ordered(term="three_year", payment_method="invoice")
    [issued] = world.payloads("InvoiceIssued")
    assert issued["installment"] == 1
    dues = sorted(t.due_at for t in world.repo.timers.values() if t.kind == INSTALLMENT_TIMER)
    assert [d.astimezone(UTC).date() for d in dues] == [date(2027, 5, 31), date(2028, 5, 31)]


async def test_r15_invoicing_charges_what_ordering_placed_by_card_never_judging_it_again(
    world: World,
) -> None:
    """R15 is judged once, by ordering at order time; a placed card order is charged."""
    await world.ordered(quote_id=uuid.uuid4(), seats=12, channel="partner")
    assert world.payloads("PaymentFailed") == []
    [paid] = world.payloads("PaymentSucceeded")
    [issued] = world.payloads("InvoiceIssued")
    assert paid["amount"] == issued["gross_total"]


# --- refunds -------------------------------------------------------------------------------------


async def test_r39_a_paid_card_order_is_credited_and_paid_back(world: World) -> None:
    order = await world.ordered()
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=NOW,
        reason="changed mind",
        approved_at=NOW,
    )
    await service.credit_refund(world.uow, world.cause(order.subscription_id), refund)
    [issued] = world.payloads("InvoiceIssued")
    [credit] = world.payloads("CreditNoteIssued")
    assert credit["gross_total"] == issued["gross_total"]
    [processed] = world.payloads("RefundProcessed")
    assert processed["amount"] == issued["gross_total"]
    assert processed["expected_settlement_date"] == "2026-06-10"  # card: 7 business days
    [note] = world.repo.notes.values()
    assert note.gross_total == -Decimal(issued["gross_total"])


async def test_r39_an_unpaid_invoice_is_cancelled_and_nothing_is_paid_back(world: World) -> None:
    order = await world.ordered(payment_method="invoice")
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=NOW,
        reason="changed mind",
        approved_at=NOW,
    )
    await service.credit_refund(world.uow, world.cause(order.subscription_id), refund)
    assert world.payloads("RefundProcessed") == []
    [note] = world.repo.notes.values()
    assert (note.refund_amount, note.expected_settlement_date) == (Decimal(0), None)
    assert [i.status for i in world.repo.invoices.values()] == ["credited"]


# --- the HTTP use cases ---------------------------------------------------------------------------


async def test_r8_buyers_and_payers_read_invoices_admins_are_refused_strangers_see_nothing(
    world: World,
) -> None:
    await world.ordered()
    for reader in (world.buyer, world.payer):
        assert len(await service.list_invoices(world.uow, world.actor(reader), world.account)) == 1
    with pytest.raises(Forbidden) as refused:
        await service.list_invoices(world.uow, world.actor(world.admin), world.account)
    assert (refused.value.slug, refused.value.rule) == ("role-required", "R8")
    with pytest.raises(NotFound):
        await service.list_invoices(world.uow, world.actor(), world.account)


async def test_r22_po_details_change_until_the_invoice_is_paid(world: World) -> None:
    await world.ordered(payment_method="invoice")
    [invoice] = world.repo.invoices.values()
    buyer = world.actor(world.buyer)
    change = PurchaseOrder(po_number="PO-4711", notes="Cost centre 42")
    changed = await service.change_purchase_order(
        world.uow, buyer, invoice.id, change, {"po_number", "notes"}
    )
    assert (changed.po_number, changed.notes) == ("PO-4711", "Cost centre 42")
    notes_only = PurchaseOrder(notes="Cost centre 43")
    changed = await service.change_purchase_order(
        world.uow, buyer, invoice.id, notes_only, {"notes"}
    )
    assert (changed.po_number, changed.notes) == ("PO-4711", "Cost centre 43")
    operator = world.actor(kind="operator")
    transfer = BankTransfer(invoice.gross_total, "KID 1")
    await service.pay_by_bank_transfer(world.uow, operator, invoice.id, transfer)
    with pytest.raises(Conflict) as late:
        await service.change_purchase_order(world.uow, buyer, invoice.id, change, {"po_number"})
    assert (late.value.slug, late.value.rule) == ("invoice-not-editable", "R22")


async def test_a_bank_transfer_pays_an_open_invoice_in_full_once(world: World) -> None:
    await world.ordered(payment_method="invoice")
    [invoice] = world.repo.invoices.values()
    operator = world.actor(kind="operator")
    with pytest.raises(Forbidden):
        await service.pay_by_bank_transfer(
            world.uow, world.actor(world.buyer), invoice.id, BankTransfer(Decimal(1), "x")
        )
    with pytest.raises(Invalid) as wrong:
        await service.pay_by_bank_transfer(
            world.uow, operator, invoice.id, BankTransfer(Decimal("1.00"), "x")
        )
    assert wrong.value.extensions["expected"] == str(invoice.gross_total)
    payment = await service.pay_by_bank_transfer(
        world.uow, operator, invoice.id, BankTransfer(invoice.gross_total, "KID 1")
    )
    assert (payment.method, payment.paid_at) == ("invoice", NOW)
    assert world.events.types()[-2:] == ["PaymentSucceeded", "InvoicePaid"]
    with pytest.raises(Conflict):
        await service.pay_by_bank_transfer(
            world.uow, operator, invoice.id, BankTransfer(invoice.gross_total, "KID 1")
        )


async def test_r19_a_recomputed_quarter_prices_the_next_invoice(world: World) -> None:
    operator = world.actor(kind="operator")
    fed = [MarketRate("NOK", Decimal("12.00"), date(2026, 3, 31))]
    assert await service.record_market_rates(world.uow, operator, fed, "api") == 1
    with pytest.raises(Invalid) as not_quarter:
        await service.recompute_rates(world.uow, operator, date(2026, 5, 1))
    assert not_quarter.value.slug == "not-a-quarter-start"
    assert await service.recompute_rates(world.uow, operator, date(2026, 4, 1)) == 4
    history = await service.exchange_rate_history(world.uow, operator, "NOK", "partner")
    [partner] = history
    assert partner.rate == (Decimal("10.80") * Decimal("1.03")).quantize(Decimal("1e-8"))
    direct = await service.exchange_rate_history(world.uow, operator, "NOK", "direct")
    assert [r.effective_from.month for r in direct] == [4, 5, 6]
    await world.ordered(payment_method="invoice")
    [invoice] = world.repo.invoices.values()
    assert invoice.exchange_rate == direct[-1].rate  # June's, in force on 1 June


async def test_r27_r37_a_late_renewal_charges_the_declined_renewal_invoice_with_its_new_card(
    world: World,
) -> None:
    """Issue 11, defect 5: the open renewal invoice is charged at once with the token the late
    renewal brings (attempt 2), no second invoice, no retry left."""
    order = await world.ordered(payment_token="tok_decline")
    await service.invoice_renewal(world.uow, world.cause(order.subscription_id), renewal_due())
    failed = world.payloads("PaymentFailed")[-1]
    invoice_id = uuid.UUID(failed["invoice_id"])
    late = RenewalRequested(
        request_id=uuid.uuid4(),
        kind="late",
        offering="autocad",
        term="annual",
        seats=1,
        payment_method="card",
        channel="direct",
        requested_at=NOW + timedelta(days=2),
        payment_token="tok_success",
    )
    await service.remember_requested_renewal(world.uow, world.cause(order.subscription_id), late)
    renewal = world.repo.invoices[invoice_id]
    assert (renewal.status, renewal.payment_token) == ("paid", "tok_success")
    assert [a.attempt for a in await world.repo.charge_attempts(invoice_id)] == [1, 2]
    assert [i.purpose for i in world.repo.invoices.values()].count("renewal") == 1
    assert not [
        t for t in world.repo.timers.values() if t.kind == RETRY_TIMER and t.key == str(invoice_id)
    ]


async def test_r16_r27_r20_a_renewal_by_partner_quote_is_billed_as_quoted_once(
    world: World,
) -> None:
    """R16: the renewal quote's line is billed as it is (VAT added, R18), not re-priced at the
    rate of the day; R20: a three-year one in thirds of it; announced again for the same renewal
    (auto-renew at the renewal date), it is not billed twice."""
    order = await world.ordered(payment_method="invoice")
    line = PricedLine(
        offering="autocad",
        term="three_year",
        quantity=3,
        unit_price=Decimal("1000.01"),
        net_amount=Decimal("3000.03"),
    )
    quoted = renewal_due(method="invoice").model_copy(
        update={
            "term": "three_year",
            "seats": 3,
            "channel": "partner",
            "quote_id": uuid.uuid4(),
            "priced_lines": [line],
            "period_ends_at": NOW + timedelta(days=3 * 365),
        }
    )
    await service.invoice_renewal(world.uow, world.cause(order.subscription_id), quoted)
    [renewal] = [i for i in world.repo.invoices.values() if i.purpose == "renewal"]
    assert (renewal.installment, renewal.channel) == (1, "partner")
    # R20: 3 seats x 333.34 (a third of the unit price; the last installment takes the
    # remainder, 3 x 333.33, so the three add up to the quoted 3000.03)
    assert renewal.net_total == Decimal("1000.02")
    [timer] = [t for t in world.repo.timers.values() if t.kind == INSTALLMENT_TIMER][-1:]
    assert (timer.payload or {})["quoted_unit_price"] == "1000.01"
    plain = quoted.model_copy(update={"quote_id": None, "priced_lines": []})
    await service.invoice_renewal(world.uow, world.cause(order.subscription_id), plain)
    assert len([i for i in world.repo.invoices.values() if i.purpose == "renewal"]) == 1
