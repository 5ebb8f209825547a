"""Invoice-due reminders in notifications (R9-R13; issue 11): routed like the invoice mail, to the
buyer and each payer of the invoice, never to an admin who is not the buyer, once per person, in
the person's language with dates in the account's time zone."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.notifications import domain
from services.notifications.domain import Member
from tests.notifications_samples import AT, LINKS, samples

ACCOUNT = domain.Account(name="Fjord Arkitekter AS", language="nb", time_zone="Europe/Oslo")
PEOPLE = [
    Member("kari@example.com", "Kari", "nb", frozenset({"buyer", "primary_admin"})),
    Member("ola@example.com", "Ola", "nb", frozenset({"secondary_admin"})),
    Member("per@example.com", "Per", "en", frozenset({"payer"})),
    Member("liv@example.com", "Liv", "", frozenset({"payer"})),
]


def planned(event_type: str, people: list[Member] = PEOPLE) -> dict[str, Any]:
    mails = domain.plan_mails(
        event_type,
        samples()[event_type],
        members=people,
        account=ACCOUNT,
        offering="revit",
        links=LINKS,
        now=AT,
    )
    return {m.recipient.email: m for m in mails}


@pytest.mark.parametrize(
    ("event_type", "template"),
    [("InvoiceDueSoon", "invoice_due_soon"), ("InvoiceOverdue", "invoice_overdue")],
)
def test_r9_r10_r11_the_buyer_and_every_payer_of_the_invoice_get_it_admins_do_not(
    event_type: str, template: str
) -> None:
    mails = planned(event_type)
    # ap@example.com is printed on the invoice (R7) without being a payer in the projection.
    assert sorted(mails) == [
        "ap@example.com",
        "kari@example.com",
        "liv@example.com",
        "per@example.com",
    ]
    assert "ola@example.com" not in mails  # R10: a secondary admin, not the buyer
    assert {m.recipient.template for m in mails.values()} == {template}
    assert mails["kari@example.com"].recipient.roles == ("buyer",)  # R9 (admin role not routed)
    assert mails["per@example.com"].recipient.roles == ("payer",)  # R11


def test_r12_a_buyer_who_is_also_a_payer_and_printed_on_the_invoice_gets_one_mail() -> None:
    people = [
        Member("AP@example.com", "Kari", "nb", frozenset({"buyer", "payer"})),
        Member("ola@example.com", "Ola", "nb", frozenset({"primary_admin"})),
    ]
    mails = planned("InvoiceOverdue", people)
    assert list(mails) == ["AP@example.com"]
    assert mails["AP@example.com"].recipient.roles == ("buyer", "payer")


def test_r13_each_in_the_person_language_dates_in_the_account_time_zone() -> None:
    mails = planned("InvoiceDueSoon")
    nb, en = mails["kari@example.com"].mail, mails["per@example.com"].mail
    assert nb.subject == "Faktura INV-2025-0003 forfaller 10. juli 2025"
    assert en.subject == "Invoice INV-2025-0003 is due 10 Jul 2025"
    assert "forfaller om 7 dager" in nb.text and "falls due in 7 days" in en.text
    assert "15\xa0000,00\xa0kr" in nb.text and "NOK\xa015,000.00" in en.text
    assert mails["liv@example.com"].mail.subject == nb.subject  # no language: the account's
    # issue 15: a signed link that opens without a bearer token
    pdf = "http://invoicing.example:8002/v1/documents/invoice/00000000-0000-0000-0000-0000000000ab.pdf"
    assert f"{pdf}?expires=" in en.text and f'href="{pdf}?expires=' in en.html
    assert '<html lang="nb">' in nb.html


def test_r13_the_overdue_mail_says_how_late_and_that_access_is_at_stake() -> None:
    mails = planned("InvoiceOverdue")
    nb, en = mails["kari@example.com"].mail, mails["per@example.com"].mail
    assert en.subject == "Overdue: invoice INV-2025-0004 was due 10 Jul 2025"
    assert "is 1 day overdue" in en.text and "renewal" in en.text and "Revit" in en.text
    assert "1 dag på overtid" in nb.text and "utløpsprosessen" in nb.text
    late = domain.render(
        "invoice_overdue",
        "en",
        {
            **domain.mail_context(
                {**samples()["InvoiceOverdue"].model_dump(), "days_overdue": 7},
                account_name=None,
                offering=None,
                links=LINKS,
                now=AT,
            ),
            "recipient_name": "Per",
        },
        ZoneInfo("Europe/Oslo"),
    )
    assert "is 7 days overdue" in late.text
