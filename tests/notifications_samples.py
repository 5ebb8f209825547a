"""One example payload of every event type notifications routes (used by unit tests and the
benchmark)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

from services.lifecycle.domain import entitlements as stage_entitlements
from shared.contracts import (
    AutoRenewChanged,
    Contract,
    InvoiceDueSoon,
    InvoiceIssued,
    InvoiceLine,
    InvoiceOverdue,
    InvoicePaid,
    OrderPlaced,
    PaymentFailed,
    Person,
    QuoteIssued,
    RefundProcessed,
    RenewalReminderDue,
    RenewalWindowOpened,
    RolesChanged,
    SeatsAdded,
    SignInLinkRequested,
    StageChanged,
    SubscriptionActivated,
    SubscriptionReactivated,
    SubscriptionRenewed,
    TermChangeScheduled,
    TrialConverted,
)
from shared.signed_links import DocumentLinks, link_key

AT = datetime(2025, 6, 9, 22, 0, tzinfo=UTC)  # 2025-06-10 00:00 in Oslo
LATER = datetime(2026, 6, 9, 22, 0, tzinfo=UTC)
LINK_SECRET = "test-document-link-secret-0123456789abcdef"
# Signed links to documents as mails carry them (issue 15), signed with a test key.
LINKS = DocumentLinks(
    "http://invoicing.example:8002/",
    link_key(LINK_SECRET),
    portal_url="http://portal.example:8005/",
)


def person(email: str, name: str = "Kari Nordmann", language: str = "nb") -> Person:
    return Person(user_id=uuid.uuid4(), email=email, name=name, language=language)


def order_placed(order_number: str = "ORD-1001", buyer: str = "kari@example.com") -> OrderPlaced:
    return OrderPlaced(
        order_id=uuid.uuid4(),
        order_number=order_number,
        subscription_id=uuid.uuid4(),
        offering="autocad",
        term="annual",
        seats=2,
        payment_method="card",
        channel="direct",
        billing_country="NO",
        currency="NOK",
        time_zone="Europe/Oslo",
        placed_at=AT,
        buyer_email=buyer,
    )


def samples() -> dict[str, Contract]:
    """Event type -> a payload; keys must cover the routing table."""
    entitlements = stage_entitlements("expired")  # lifecycle's R35 table, as it publishes it
    return {
        "OrderPlaced": order_placed(),
        "QuoteIssued": QuoteIssued(
            quote_id=uuid.uuid4(),
            quote_number="Q-77",
            partner_id=uuid.uuid4(),
            offering="revit",
            term="three_year",
            seats=10,
            currency="NOK",
            net_amount=Decimal("123456.50"),
            valid_until=date(2025, 7, 1),
        ),
        "InvoiceIssued": InvoiceIssued(
            invoice_id=uuid.UUID("00000000-0000-0000-0000-0000000000aa"),
            invoice_number="INV-2025-0001",
            order_id=uuid.uuid4(),
            currency="NOK",
            net_total=Decimal("12000.00"),
            vat_total=Decimal("3000.00"),
            gross_total=Decimal("15000.00"),
            lines=[
                InvoiceLine(
                    description="autocad annual",
                    quantity=2,
                    unit_price=Decimal("6000.00"),
                    net_amount=Decimal("12000.00"),
                    vat_rate=Decimal("0.25"),
                    vat_amount=Decimal("3000.00"),
                )
            ],
            payment_method="invoice",
            issued_at=AT,
            due_date=date(2025, 7, 10),
            purpose="installment",
            installment=2,
            payer_emails=["ap@example.com"],
        ),
        "InvoiceDueSoon": InvoiceDueSoon(
            invoice_id=uuid.UUID("00000000-0000-0000-0000-0000000000ab"),
            invoice_number="INV-2025-0003",
            currency="NOK",
            gross_total=Decimal("15000.00"),
            due_date=date(2025, 7, 10),
            days_before_due=7,
            issued_at=AT,
            payer_emails=["ap@example.com"],
        ),
        "InvoiceOverdue": InvoiceOverdue(
            invoice_id=uuid.UUID("00000000-0000-0000-0000-0000000000ac"),
            invoice_number="INV-2025-0004",
            currency="NOK",
            gross_total=Decimal("15000.00"),
            due_date=date(2025, 7, 10),
            days_overdue=1,
            issued_at=AT,
            purpose="renewal",
            payer_emails=["ap@example.com"],
        ),
        "PaymentFailed": PaymentFailed(
            invoice_id=uuid.uuid4(),
            amount=Decimal("15000.00"),
            currency="NOK",
            method="card",
            reason="card_declined",
            failed_at=AT,
            purpose="renewal",
            next_attempt_at=LATER,
        ),
        "InvoicePaid": InvoicePaid(
            invoice_id=uuid.uuid4(), invoice_number="INV-2025-0002", paid_at=AT
        ),
        "RefundProcessed": RefundProcessed(
            refund_id=uuid.uuid4(),
            credit_note_id=uuid.uuid4(),
            amount=Decimal("1250.00"),
            currency="NOK",
            method="card",
            expected_settlement_date=date(2025, 6, 18),
        ),
        "RenewalWindowOpened": RenewalWindowOpened(
            renews_at=LATER, expires_at=LATER, auto_renew=False
        ),
        "RenewalReminderDue": RenewalReminderDue(days_before=30, expires_at=LATER),
        "SubscriptionRenewed": SubscriptionRenewed(
            renewal_id=uuid.uuid4(),
            offering="autocad",
            term="annual",
            seats=2,
            starts_at=AT,
            expires_at=LATER,
            renews_at=LATER,
        ),
        "TermChangeScheduled": TermChangeScheduled(new_term="monthly", effective_at=LATER),
        "AutoRenewChanged": AutoRenewChanged(auto_renew=False, changed_at=AT),
        "SignInLinkRequested": SignInLinkRequested(
            user_id=uuid.uuid4(),
            email="kari@example.com",
            name="Kari Nordmann",
            language="nb",
            link="https://portal.example/sign-in/abc",
            expires_at=AT,
        ),
        "SeatsAdded": SeatsAdded(
            order_id=uuid.uuid4(),
            order_number="ORD-1002",
            offering="autocad",
            term="annual",
            seats_added=3,
            total_seats=5,
            prorate_from=AT,
            coterm_until=LATER,
            payment_method="card",
            billing_country="NO",
            currency="NOK",
            time_zone="Europe/Oslo",
        ),
        "TrialConverted": TrialConverted(
            order_id=uuid.uuid4(),
            order_number="ORD-1003",
            term="annual",
            seats=1,
            payment_method="paypal",
            converted_at=AT,
        ),
        "StageChanged": StageChanged(
            from_stage="active",
            to_stage="expired",
            reason="not renewed",
            entitlements=entitlements,
            effective_at=AT,
            next_stage_at=LATER,
        ),
        "SubscriptionReactivated": SubscriptionReactivated(
            from_stage="suspended", reason="paid", expires_at=LATER, renews_at=LATER
        ),
        "SubscriptionActivated": SubscriptionActivated(
            order_id=uuid.uuid4(),
            offering="autocad",
            term="annual",
            seats=2,
            time_zone="Europe/Oslo",
            starts_at=AT,
            expires_at=LATER,
            renews_at=LATER,
            auto_renew=True,
        ),
        "RolesChanged": RolesChanged(
            buyer=person("kari@example.com"), primary_admin=person("ola@example.com", "Ola")
        ),
    }
