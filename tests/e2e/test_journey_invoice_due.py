"""Journey 11 (issue 11): invoice-due and overdue mails, R9, R10, R11, R12, R13, R21.

The four services run as OS processes with test clocks (``conftest.py``). The reminders are
invoicing's durable timers, moved by the test clock; the events notifications routes are
invoicing's own (read back from its Kafka topic for the redelivery); the mails are read from the
real SMTP catcher.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from shared.auth import issue_token
from shared.contracts import Envelope
from shared.time.clock import SystemClock
from shared.topics import Topics
from tests.e2e.journeys import Account, Journey, local
from tests.support import wait_for

pytestmark = pytest.mark.e2e

REMINDERS = ("invoice_due_soon", "invoice_overdue")


def due_soon_subject(subject: str) -> bool:
    return subject.startswith(("Invoice ", "Faktura ")) and (
        " is due " in subject or " forfaller " in subject
    )


def overdue_subject(subject: str) -> bool:
    return subject.startswith(("Overdue: invoice ", "Purring: faktura "))


ADMIN_MAIL = {"admin_appointed", "product_access_granted", "product_access_changed"}  # R10


async def add_user(j: Journey, account: Account, path: str, name: str, **extra: Any) -> str:
    email = f"{name.lower()}-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "name": name, **extra}
    if path == "users":
        user = await j.post("ordering", f"/v1/accounts/{account.id}/users", account.auth, body)
        await j.post(
            "ordering",
            f"/v1/accounts/{account.id}/secondary-admins",
            account.auth,
            {"user_id": user["user_id"]},
            expect=200,
        )
    else:
        await j.post("ordering", f"/v1/accounts/{account.id}/payers", account.auth, body)
    return email


async def reminders_logged(j: Journey, account: Account) -> list[tuple[str, str, tuple[str, ...]]]:
    """(template, recipient, routed roles) of the reminder mails in the delivery log."""
    return sorted(
        (d["template"], d["recipient"], tuple(sorted(d["roles"])))
        for d in await j.deliveries(account)
        if d["template"] in REMINDERS
    )


async def caught(j: Journey, address: str, subject: Callable[[str], bool]) -> list[dict[str, Any]]:
    return [m for m in await j.mail.to(address) if subject(m["subject"])]


async def wait_caught(
    j: Journey, addresses: list[str], subject: Callable[[str], bool], what: str
) -> dict[str, list[dict[str, Any]]]:
    """The mails the SMTP catcher holds for each address, once each has one."""

    async def all_there() -> dict[str, list[dict[str, Any]]] | None:
        found = {a: await caught(j, a, subject) for a in addresses}
        return found if all(found.values()) else None

    return await wait_for(all_there, timeout=30, what=what)


async def duplicates_seen(j: Journey) -> float:
    """Notifications' count of records its inbox dropped as already handled."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(j.url("notifications", "/metrics"))).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "platform_events_consumed_total"
        and s.labels == {"consumer": "notifications", "outcome": "duplicate"}
    )


async def redeliver(j: Journey, account: Account, event_type: str) -> Envelope:
    """Send invoicing's own record of ``event_type`` for the account to its topic again, as a
    broker redelivery would hand it to notifications a second time."""
    topic = Topics(j.dep.prefix).events("invoicing")
    bootstrap = j.dep.settings("invoicing").kafka_bootstrap_servers
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:

        async def found() -> Any:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    envelope = Envelope.model_validate_json(record.value)
                    if envelope.event_type == event_type and str(envelope.account_id) == account.id:
                        return record
            return None

        record = await wait_for(found, timeout=30, what=f"{event_type} on {topic}")
    finally:
        await consumer.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, value=record.value, key=record.key, headers=list(record.headers or [])
        )
    finally:
        await producer.stop()
    return Envelope.model_validate_json(record.value)


async def test_journey_11_due_and_overdue_mails_reach_each_payer_and_the_buyer_never_an_admin(
    journey: Journey,
) -> None:
    """R21: a pay-by-invoice invoice, due net 30. R9, R11: 7 days before its due date and 1 day
    after it, the buyer and each payer of the invoice are told, each once (R12), in their own
    language or the account's (R13); R10: the secondary admin is told nothing of it. A redelivered
    reminder mails nobody twice (R12); once paid, the 7-days-overdue reminder never comes."""
    j = journey
    await j.start_clock(local(2030, 5, 14, 9, 0))
    account = await j.open_account(language="nb")
    buyer = account.buyer_email
    admin = await add_user(j, account, "users", "Ola")
    payer_en = await add_user(j, account, "payers", "Per", language="en")
    payer_nb = await add_user(j, account, "payers", "Liv")  # no language: the account's (nb)
    payers = sorted([payer_en, payer_nb])
    partner = issue_token(
        j.dep.settings("ordering"), SystemClock(), subject=uuid.uuid4(), kind="partner"
    )
    quote = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/quotes",
        {"Authorization": f"Bearer {partner}"},
        {"offering": "revit", "term": "annual", "seats": 3},
    )
    await j.post(
        "ordering",
        f"/v1/quotes/{quote['id']}/acceptance",
        account.auth,
        {"payment_method": "invoice", "auto_renew": True},  # R14: through a partner quote
    )
    await j.advance(local(2030, 5, 14, 9, 5), "quote accepted by invoice")
    [invoice] = await j.invoices(account)
    assert (invoice["payment_method"], invoice["status"]) == ("invoice", "issued")
    assert invoice["due_date"] == "2030-06-13"  # R21: net 30
    assert invoice["payer_emails"] == payers  # R7
    number = invoice["invoice_number"]

    # A minute before the "due soon" day's 09:00: nothing yet.
    await j.advance(local(2030, 6, 6, 8, 59), "the morning before the reminder")
    assert await reminders_logged(j, account) == []

    # R9, R11: 7 days before the due date, the buyer and each payer; R10: not the admin.
    await j.advance(local(2030, 6, 6, 9, 0), "7 days before the due date")
    due_soon = [
        ("invoice_due_soon", buyer, ("buyer",)),
        *[("invoice_due_soon", payer, ("payer",)) for payer in payers],
    ]
    assert await reminders_logged(j, account) == sorted(due_soon)
    mails = await wait_caught(
        j, [buyer, *payers], lambda s: number in s and due_soon_subject(s), "due soon"
    )
    assert [m["subject"] for m in mails[payer_en]] == [f"Invoice {number} is due 13 Jun 2030"]
    nb_subject = f"Faktura {number} forfaller 13. juni 2030"  # R13: the account's language
    assert [m["subject"] for m in mails[buyer]] == [nb_subject]
    assert [m["subject"] for m in mails[payer_nb]] == [nb_subject]
    total = Decimal(invoice["gross_total"])
    assert f"NOK\xa0{total:,.2f}" in mails[payer_en][0]["text"]
    assert "falls due in 7 days" in mails[payer_en][0]["text"]

    # R31: unpaid at the end of the due date the subscription is Expired (00:00); at 09:00 the
    # first day after it, the buyer and the payers are told the invoice is overdue.
    await j.advance(local(2030, 6, 14, 9, 0), "1 day overdue")
    overdue = [
        ("invoice_overdue", buyer, ("buyer",)),
        *[("invoice_overdue", payer, ("payer",)) for payer in payers],
    ]
    assert await reminders_logged(j, account) == sorted(due_soon + overdue)
    late = await wait_caught(
        j, [buyer, *payers], lambda s: number in s and overdue_subject(s), "overdue"
    )
    assert [m["subject"] for m in late[payer_en]] == [
        f"Overdue: invoice {number} was due 13 Jun 2030"
    ]
    assert "is 1 day overdue" in late[payer_en][0]["text"]
    assert [m["subject"] for m in late[payer_nb]] == [
        f"Purring: faktura {number} forfalt 13. juni 2030"
    ]

    # R12: the same overdue event delivered again (invoicing's own record) mails nobody again.
    before = await duplicates_seen(j)
    redelivered = await redeliver(j, account, "InvoiceOverdue")
    assert redelivered.payload["days_overdue"] == 1

    async def dropped() -> bool:
        return await duplicates_seen(j) > before

    await wait_for(dropped, timeout=30, what="notifications to drop the redelivered reminder")
    assert await reminders_logged(j, account) == sorted(due_soon + overdue)

    # Paid by bank transfer: no 7-days-overdue reminder.
    await j.post(
        "invoicing",
        f"/v1/operator/invoices/{invoice['id']}/bank-payments",
        j.operator,
        {"amount": invoice["gross_total"], "reference": "KID 20300615"},
    )
    await j.advance(local(2030, 6, 21, 12, 0), "past the 7-days-overdue day, paid")
    assert [i["status"] for i in await j.invoices(account)] == ["paid"]
    assert (await j.subscription(account, invoice["subscription_id"]))["stage"] == "active"
    assert await reminders_logged(j, account) == sorted(due_soon + overdue)

    # What the SMTP catcher holds: one "due soon" and one "overdue" for each, none for the admin.
    for address in (buyer, *payers):
        subjects = [m["subject"] for m in await caught(j, address, lambda s: number in s)]
        assert len([s for s in subjects if due_soon_subject(s)]) == 1, (address, subjects)
        assert len([s for s in subjects if overdue_subject(s)]) == 1, (address, subjects)
    assert await caught(j, admin, lambda s: number in s) == []
    admin_templates = {
        d["template"] for d in await j.deliveries(account) if d["recipient"] == admin
    }
    assert admin_templates and admin_templates <= ADMIN_MAIL  # R10
