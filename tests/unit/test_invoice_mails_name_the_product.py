"""Issue 15 [links]: an invoice mail names the product from the invoice event itself.

Kafka orders events per topic, not across topics: notifications may see invoicing's
``InvoiceIssued`` before ordering's ``OrderPlaced``, the only event that told it the product.
Invoicing's invoice events now carry the ``offering`` billed. Each test runs invoicing's real use
cases on its in-memory fakes, takes the envelopes it emitted (the producer's real output) and
hands them, as the consumer reads them, to notifications' use case on its fakes, where no
``OrderPlaced`` was ever seen. Every invoice mail also links the invoice's page in the portal.
"""

from __future__ import annotations

import uuid

from services.notifications import service as notifications
from shared.contracts import Envelope, payload_model
from tests.notifications_samples import LINKS
from tests.unit import test_invoicing_service as invoicing
from tests.unit.test_invoicing_due_reminders import fire, reminder_of
from tests.unit.test_notifications_service import Delivery, Platform, opened, roles

PORTAL = "http://portal.example:8005"


async def mails_of(envelope: Envelope, account_id: uuid.UUID) -> list[Delivery]:
    """The mails notifications queues for invoicing's envelope, as its consumer reads it."""
    world = await opened(Platform(account_id=account_id), roles(payers=("per@example.com",)))
    payload = payload_model(envelope.event_type, 1).model_validate(envelope.payload)
    event = notifications.RoutedEvent.of(envelope, payload)
    assert (await notifications.queue_mails(world.uow(), event, links=LINKS)).recorded >= 1
    assert world.repo.offerings == {}  # no OrderPlaced has been seen
    return world.repo.deliveries


def emitted(world: invoicing.World, event_type: str) -> Envelope:
    [envelope] = [e for e in world.events.emitted if e.event_type == event_type]
    return envelope


async def test_the_invoice_mail_names_the_product_without_any_order_placed_seen() -> None:
    world = invoicing.World()
    await world.opened()
    await world.ordered(payment_method="invoice")  # AutoCAD, net 30
    issued = emitted(world, "InvoiceIssued")
    assert issued.payload["offering"] == "autocad"

    deliveries = await mails_of(issued, world.account)
    by_address = {d.recipient.email: d.mail for d in deliveries}
    kari, per = by_address["kari@example.com"], by_address["per@example.com"]
    number = issued.payload["invoice_number"]
    assert kari.subject == f"Faktura {number} for AutoCAD"  # nb, the buyer's language
    assert per.subject == f"Your invoice {number} for AutoCAD"  # en, the payer's
    assert "autocad" not in per.text  # by name, never by code

    # ... and links the invoice's page in the portal, next to the signed PDF link.
    page = f"{PORTAL}/invoices/{issued.payload['invoice_id']}"
    assert f"See the invoice in your account: {page}\n" in per.text
    assert f'href="{page}"' in per.html and "See the invoice in your account</a>" in per.html
    assert f"Se fakturaen i kontoen din: {page}\n" in kari.text
    assert "/v1/documents/invoice/" in per.text  # the signed PDF link stays

    # An InvoiceIssued of a producer before the field (v1, no offering): "for your order".
    older = issued.model_copy(update={"payload": {**issued.payload, "offering": None}})
    [*_, old] = sorted(await mails_of(older, world.account), key=lambda d: d.recipient.email)
    assert "AutoCAD" not in old.mail.subject


async def test_reminders_and_a_failed_payment_name_the_product_and_link_the_invoice_page() -> None:
    world = invoicing.World()
    await world.opened()
    await world.ordered(payment_method="invoice")
    [invoice] = world.repo.invoices.values()
    timer = reminder_of(world, invoice.id)
    assert timer is not None
    await fire(world, timer)  # 7 days before the due date
    timer = reminder_of(world, invoice.id)
    assert timer is not None
    await fire(world, timer)  # 1 day after it
    page = f"{PORTAL}/invoices/{invoice.id}"
    for event_type in ("InvoiceDueSoon", "InvoiceOverdue"):
        envelope = emitted(world, event_type)
        assert envelope.payload["offering"] == "autocad"
        mails = {d.recipient.email: d.mail for d in await mails_of(envelope, world.account)}
        assert "AutoCAD" in mails["per@example.com"].text, event_type
        assert f"See the invoice in your account: {page}" in mails["per@example.com"].text

    declined = invoicing.World()
    await declined.opened()
    await declined.ordered(payment_token="tok_decline")
    failed = emitted(declined, "PaymentFailed")
    assert failed.payload["offering"] == "autocad"
    [mail] = await mails_of(failed, declined.account)  # the buyer only
    assert "abonnementet på AutoCAD" in mail.mail.text
    page = f"{PORTAL}/invoices/{failed.payload['invoice_id']}"
    assert f"Se fakturaen i kontoen din: {page}" in mail.mail.text
    assert f'href="{page}"' in mail.mail.html
    assert "Faktura (PDF): http://invoicing.example:8002/v1/documents/invoice/" in mail.mail.text
