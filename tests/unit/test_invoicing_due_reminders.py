"""Invoice-due reminders (R9, R11, R21; issue 11): which days, which invoices, and when they stop.

The days are pure (``domain.due_reminders``); the use cases run on the in-memory repository of
``test_invoicing_service`` (a timer "fires" by calling its use case with its payload and time).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.invoicing import domain, service
from services.invoicing.billing import REMINDER_TIMER
from services.invoicing.commands import BankTransfer, ReminderDue
from services.invoicing.models import Timer
from shared.contracts import RefundApproved
from tests.unit.test_invoicing_service import NOW, World, renewal_due

OSLO = ZoneInfo("Europe/Oslo")


def oslo(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=OSLO).astimezone(UTC)


# --- the days (pure) ------------------------------------------------------------------------------


def test_r21_a_net_30_invoice_is_reminded_7_days_before_and_1_and_7_days_after_its_due_date() -> (
    None
):
    reminders = domain.due_reminders(date(2030, 6, 13), "Europe/Oslo")
    assert [(r.kind, r.days, r.at) for r in reminders] == [
        ("due_soon", 7, oslo(2030, 6, 6, 9)),
        ("overdue", 1, oslo(2030, 6, 14, 9)),  # R31: the process started at 00:00 that day
        ("overdue", 7, oslo(2030, 6, 20, 9)),
    ]


def test_r13_r23_reminders_are_at_9_local_time_across_a_dst_change() -> None:
    # Summer time starts 2030-03-31 in Oslo: 09:00 is 08:00 UTC on the 30th, 07:00 on the 1st.
    reminders = domain.due_reminders(date(2030, 3, 31), "Europe/Oslo")
    assert [r.at for r in reminders] == [
        datetime(2030, 3, 24, 8, tzinfo=UTC),
        datetime(2030, 4, 1, 7, tzinfo=UTC),
        datetime(2030, 4, 7, 7, tzinfo=UTC),
    ]
    assert domain.due_reminders(date(2030, 6, 13), "America/New_York")[0].at == datetime(
        2030, 6, 6, 13, tzinfo=UTC
    )


def test_each_reminder_follows_the_one_before_and_none_comes_after_the_last() -> None:
    due = date(2030, 6, 13)
    issued = oslo(2030, 5, 14, 9, 1)
    first = domain.next_due_reminder(due, "Europe/Oslo", issued)
    assert first is not None and (first.kind, first.days) == ("due_soon", 7)
    second = domain.next_due_reminder(due, "Europe/Oslo", first.at)
    assert second is not None and (second.kind, second.days) == ("overdue", 1)
    third = domain.next_due_reminder(due, "Europe/Oslo", second.at)
    assert third is not None and (third.kind, third.days) == ("overdue", 7)
    assert domain.next_due_reminder(due, "Europe/Oslo", third.at) is None


def test_r34_an_invoice_due_the_day_it_is_issued_gets_no_due_soon_only_overdue_mails() -> None:
    """R34 (no more credit): due at issue. "Due in 7 days" would be a lie; the payers are told
    once it is overdue, which is when its subscription starts R31."""
    issued = oslo(2030, 6, 1, 10)
    first = domain.next_due_reminder(date(2030, 6, 1), "Europe/Oslo", issued)
    assert first is not None
    assert (first.kind, first.days, first.at) == ("overdue", 1, oslo(2030, 6, 2, 9))


@pytest.mark.parametrize(
    ("method", "status", "reminded"),
    [
        ("invoice", "issued", True),
        ("invoice", "paid", False),
        ("invoice", "credited", False),  # R39: cancelled by a credit note
        ("card", "issued", False),  # charged at issue; a failure has R37 retries and mails
        ("paypal", "issued", False),
    ],
)
def test_r21_only_open_pay_by_invoice_invoices_are_reminded(
    method: str, status: str, reminded: bool
) -> None:
    assert domain.reminded_of_due_date(method, status) is reminded  # type: ignore[arg-type]


# --- the use cases --------------------------------------------------------------------------------


@pytest.fixture
async def world() -> World:
    w = World()
    await w.opened()
    return w


def reminder_of(world: World, invoice_id: uuid.UUID) -> Timer | None:
    return world.repo.timers.get((REMINDER_TIMER, str(invoice_id)))


async def fire(world: World, timer: Timer) -> None:
    """What the timer loop does at ``timer.due_at``."""
    await service.remind_due_invoice(
        world.uow, ReminderDue.from_payload(timer.payload or {}), timer.due_at
    )


def reminders_sent(world: World) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.event_type, e.payload)
        for e in world.events.emitted
        if e.event_type in ("InvoiceDueSoon", "InvoiceOverdue")
    ]


async def test_r9_r11_r21_an_open_invoice_is_reminded_on_each_day_then_no_more(
    world: World,
) -> None:
    await world.ordered(payment_method="invoice")  # issued 2026-06-01 10:00 Oslo, due 07-01
    [invoice] = world.repo.invoices.values()
    timer = reminder_of(world, invoice.id)
    assert timer is not None and timer.due_at == oslo(2026, 6, 24, 9)
    assert timer.payload == {
        "invoice_id": str(invoice.id),
        "reminder": "due_soon",
        "days": 7,
        "subscription_id": str(invoice.subscription_id),  # a cancellation finds it (R34)
    }
    await fire(world, timer)
    [(kind, soon)] = reminders_sent(world)
    assert kind == "InvoiceDueSoon"
    assert soon == {
        "invoice_id": str(invoice.id),
        "invoice_number": invoice.invoice_number,
        "currency": "NOK",
        "gross_total": str(invoice.gross_total.quantize(Decimal("0.01"))),
        "due_date": "2026-07-01",
        "days_before_due": 7,
        "issued_at": NOW.isoformat().replace("+00:00", "Z"),
        "purpose": "order",
        "installment": None,
        "payer_emails": ["payer@example.com"],  # R11: the payers printed on the invoice
        "offering": "autocad",  # issue 15: the mail names the product without OrderPlaced
    }
    [event] = [e for e in world.events.emitted if e.event_type == "InvoiceDueSoon"]
    assert event.occurred_at == timer.due_at  # business time: the reminder's day
    seen = [timer.due_at]
    while (timer := reminder_of(world, invoice.id)) is not None and timer.due_at not in seen:
        seen.append(timer.due_at)
        await fire(world, timer)
    assert seen == [oslo(2026, 6, 24, 9), oslo(2026, 7, 2, 9), oslo(2026, 7, 8, 9)]
    assert [(k, p.get("days_overdue")) for k, p in reminders_sent(world)] == [
        ("InvoiceDueSoon", None),
        ("InvoiceOverdue", 1),
        ("InvoiceOverdue", 7),
    ]


async def test_r9_r11_a_paid_invoice_gets_no_further_reminder(world: World) -> None:
    await world.ordered(payment_method="invoice")
    [invoice] = world.repo.invoices.values()
    timer = reminder_of(world, invoice.id)
    assert timer is not None
    operator = world.actor(kind="operator")
    await service.pay_by_bank_transfer(
        world.uow, operator, invoice.id, BankTransfer(invoice.gross_total, "KID 1")
    )
    assert reminder_of(world, invoice.id) is None  # the timer is deleted with the payment
    await fire(world, timer)  # and one already being fired sends nothing (status under lock)
    assert reminders_sent(world) == []


async def test_r39_a_credited_invoice_gets_no_reminder(world: World) -> None:
    order = await world.ordered(payment_method="invoice")
    [invoice] = world.repo.invoices.values()
    timer = reminder_of(world, invoice.id)
    assert timer is not None
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=NOW,
        reason="changed mind",
        approved_at=NOW,
    )
    await service.credit_refund(world.uow, world.cause(order.subscription_id), refund)
    assert reminder_of(world, invoice.id) is None
    await fire(world, timer)
    assert reminders_sent(world) == []


async def test_r34_a_cancelled_subscription_gets_no_reminder_of_its_invoices(world: World) -> None:
    """Cancelled is final (R34): nothing can be reactivated by paying, so nobody is asked to."""
    order = await world.ordered(payment_method="invoice")
    other = await world.ordered(payment_method="invoice")
    cancelled, kept = (
        next(i for i in world.repo.invoices.values() if i.subscription_id == s)
        for s in (order.subscription_id, other.subscription_id)
    )
    await service.stop_charging_cancelled(
        world.uow, world.cause(order.subscription_id), lapsed_unpaid=True
    )
    assert reminder_of(world, cancelled.id) is None
    assert reminder_of(world, kept.id) is not None  # the account's other subscription: as before


async def test_r21_r25_card_invoices_and_paid_invoices_get_no_reminder_timer(
    world: World,
) -> None:
    await world.ordered()  # card, paid at issue
    await world.ordered(payment_token="tok_decline")  # card, declined: R37 retries instead
    assert [t for t in world.repo.timers.values() if t.kind == REMINDER_TIMER] == []


async def test_r34_a_renewal_due_at_issue_is_reminded_only_once_overdue(world: World) -> None:
    lapsed = await world.ordered(payment_method="invoice")
    other = await world.ordered(payment_method="invoice")
    await service.stop_charging_cancelled(
        world.uow, world.cause(lapsed.subscription_id), lapsed_unpaid=True
    )
    due = renewal_due(method="invoice")
    await service.invoice_renewal(world.uow, world.cause(other.subscription_id), due)
    [renewal] = [i for i in world.repo.invoices.values() if i.purpose == "renewal"]
    assert renewal.due_date == date(2026, 6, 1)  # R34: no more credit
    timer = reminder_of(world, renewal.id)
    assert timer is not None
    assert (timer.payload or {})["reminder"] == "overdue"
    assert timer.due_at == oslo(2026, 6, 2, 9)
