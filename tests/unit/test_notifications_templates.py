"""Every routed mail renders in both languages (R13), escaped, with local dates and money."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.notifications import domain
from tests.notifications_samples import AT, LINKS, samples

OSLO = ZoneInfo("Europe/Oslo")
DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications-routing.md"
CASES = [
    (event_type, route.template)
    for event_type, routes in sorted(domain.routing().items())
    for route in routes
]


def context_for(event_type: str, name: str = "Kari Nordmann") -> dict[str, Any]:
    base = domain.mail_context(
        samples()[event_type].model_dump(),
        account_name="Fjord Arkitekter AS",
        offering="autocad",
        links=LINKS,
        now=AT,
    )
    recipient = domain.Recipient("kari@example.com", name, "nb", ("primary_admin",), "x")
    return domain.personal(base, recipient)


def test_every_routed_event_has_a_sample_and_every_template_a_route() -> None:
    assert set(samples()) == set(domain.routing())
    assert sorted({template for _, template in CASES}) == domain.template_names()


@pytest.mark.parametrize(("event_type", "template"), CASES)
@pytest.mark.parametrize("language", domain.LANGUAGES)
def test_r13_every_template_renders_in_both_languages(
    event_type: str, template: str, language: str
) -> None:
    mail = domain.render(template, language, context_for(event_type), OSLO)
    other = domain.render(
        template, "en" if language == "nb" else "nb", context_for(event_type), OSLO
    )
    assert mail.subject and "\n" not in mail.subject
    assert mail.subject != other.subject  # really translated
    assert ("Hei Kari Nordmann" if language == "nb" else "Hello Kari Nordmann") in mail.text
    assert f'<html lang="{language}">' in mail.html and "Kari Nordmann" in mail.html
    assert mail.text.rstrip().endswith("Abonnementer" if language == "nb" else "Subscriptions")


def test_r9_the_order_confirmation_carries_the_order_number() -> None:
    mail = domain.render("order_confirmation", "nb", context_for("OrderPlaced"), OSLO)
    assert mail.subject == "Ordrebekreftelse ORD-1001"
    assert "ORD-1001" in mail.text and "ORD-1001" in mail.html


def test_r11_r13_invoice_mail_links_the_pdf_and_formats_money_for_the_locale() -> None:
    nb = domain.render("invoice_issued", "nb", context_for("InvoiceIssued"), OSLO)
    en = domain.render("invoice_issued", "en", context_for("InvoiceIssued"), OSLO)
    pdf = "http://invoicing.example:8002/v1/documents/invoice/00000000-0000-0000-0000-0000000000aa.pdf"
    assert f"{pdf}?expires=" in nb.text and f'href="{pdf}?expires=' in nb.html
    assert "15\xa0000,00\xa0kr" in nb.text and "NOK\xa015,000.00" in en.text
    assert "NOK15" not in en.text + en.html
    assert nb.subject == "Faktura INV-2025-0001 for AutoCAD, avdrag 2 av 3"  # R20, issue 15


def test_r13_dates_are_shown_in_the_account_time_zone() -> None:
    # placed 2025-06-09 22:00 UTC is 10 June 00:00 in Oslo, 9 June 18:00 in New York
    oslo = domain.render("order_confirmation", "nb", context_for("OrderPlaced"), OSLO)
    york = domain.render(
        "order_confirmation", "en", context_for("OrderPlaced"), ZoneInfo("America/New_York")
    )
    assert "10. juni 2025 kl. 00:00 CEST" in oslo.text
    assert "9 Jun 2025, 18:00 EDT" in york.text


def test_r39_card_refund_mail_states_5_to_7_business_days() -> None:
    en = domain.render("refund_confirmation", "en", context_for("RefundProcessed"), OSLO)
    nb = domain.render("refund_confirmation", "nb", context_for("RefundProcessed"), OSLO)
    assert "5-7 business days" in en.text and "5-7 virkedager" in nb.text


def test_r37_payment_failed_asks_to_update_the_payment_method() -> None:
    en = domain.render("payment_failed", "en", context_for("PaymentFailed"), OSLO)
    assert "update your payment method" in en.text.lower()


def test_html_is_escaped_and_subjects_stay_one_line() -> None:
    evil = "<script>alert(1)</script>"
    mail = domain.render("order_confirmation", "en", context_for("OrderPlaced", evil), OSLO)
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    assert evil in mail.text  # plain text is not HTML: shown as written
    injected = {**context_for("OrderPlaced"), "order_number": "1\r\nBcc: evil@example.com"}
    subject = domain.render("order_confirmation", "en", injected, OSLO).subject
    assert "\n" not in subject and "\r" not in subject


def test_the_routing_document_is_generated_from_the_table() -> None:
    """docs/notifications-routing.md cannot drift: regenerate with
    ``python -m services.notifications.routing_doc``."""
    assert DOC.read_text() == domain.routing_document()
