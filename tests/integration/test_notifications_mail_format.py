"""Issue 15, through the real SMTP catcher: an invoice mail to a Norwegian account on a test
clock carries a Date header from that (business) clock, a Message-ID, the amount as a
Norwegian reads it, the product's name and a signed link to the PDF."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest

from shared.contracts import AccountOpened, InvoiceIssued, OrderPlaced, RolesChanged
from tests.integration.notifications_support import (
    address,
    envelope,
    notifications_app,
    notifications_settings,
    person,
    publish,
)
from tests.notifications_samples import order_placed, samples
from tests.support import Backing, MailCatcher, deployment, wait_for

pytestmark = pytest.mark.integration

CLOCK_NOW = datetime(2030, 1, 10, 13, 30, tzinfo=UTC)  # the account's test clock


def header_instant(value: str) -> datetime:
    """maildev gives the raw Date header, Mailpit an ISO instant."""
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_issue15_an_invoice_mail_through_smtp_has_date_and_locale_amount(
    backing: Backing,
) -> None:
    buyer = address("kari")
    account, clock = uuid.uuid4(), uuid.uuid4()
    opened = AccountOpened(
        name="Fjord Arkitekter AS",
        country="NO",
        currency="NOK",
        language="nb",
        time_zone="Europe/Oslo",
        test_clock_id=clock,
    )
    ordered = order_placed("ORD-1515", buyer)
    assert isinstance(ordered, OrderPlaced)
    sample = samples()["InvoiceIssued"]
    assert isinstance(sample, InvoiceIssued)
    number = f"INV-2030-{uuid.uuid4().hex[:6]}"
    invoice = sample.model_copy(
        update={
            "invoice_id": uuid.uuid4(),
            "invoice_number": number,
            "purpose": "order",
            "installment": None,
            "payer_emails": [],
            "gross_total": sample.gross_total + 6330,  # 21 330,00 kr
        }
    )
    catcher = MailCatcher(backing)
    async with (
        deployment(backing, ("notifications",)) as dep,
        notifications_app(notifications_settings(dep)) as app,
    ):
        await app.state.runtime.pool.execute(
            "INSERT INTO test_clock_times (clock_id, now) VALUES ($1, $2)", clock, CLOCK_NOW
        )
        billed = envelope(account, invoice)
        bought = envelope(account, ordered)
        billed = billed.model_copy(update={"subscription_id": ordered.subscription_id})
        await publish(
            backing,
            dep,
            envelope(account, opened),
            envelope(
                account, RolesChanged(buyer=person(buyer, "nb"), primary_admin=person(buyer, "nb"))
            ),
            bought,
        )

        async def confirmed() -> list[dict[str, str]] | None:
            return [m for m in await catcher.to(buyer) if "ORD-1515" in m["subject"]] or None

        # Invoicing's topic is not ordered behind ordering's: the product is known once the
        # order is (as in production, where invoicing bills the order it consumed).
        await wait_for(confirmed, what="the order confirmation")
        await publish(backing, dep, billed)

        async def caught() -> list[dict[str, str]] | None:
            found = [m for m in await catcher.to(buyer) if number in m["subject"]]
            return found or None

        [mail] = await wait_for(caught, what="the invoice mail in the SMTP catcher")
    assert mail["subject"] == f"Faktura {number} for AutoCAD"
    assert mail["date"], "no Date header"
    assert header_instant(mail["date"]) == CLOCK_NOW  # the business clock, not the wall's
    assert mail["message_id"].strip("<>").endswith("@subscription-platform")
    assert "21\xa0330,00\xa0kr" in mail["text"] and "21\xa0330,00\xa0kr" in mail["html"]
    assert "NOK21" not in mail["text"] and "autocad" not in mail["text"]
    assert "/v1/documents/invoice/" in mail["text"] and "signature=" in mail["text"]
