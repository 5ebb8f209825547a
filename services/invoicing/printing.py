"""What an invoice's and a credit note's PDF say (pdf.py draws them): facts, lines, how to pay."""

from __future__ import annotations

import uuid

from shared.contracts import InvoiceLine
from shared.time.calendar import local_date

from . import domain
from .models import Account, Buyer, CreditNote, Invoice, StoredLine
from .pdf import PrintedDocument


def buyer_lines(account_id: uuid.UUID, account: Account | None, buyer: Buyer | None) -> list[str]:
    found = [account.name or "", f"Country: {account.country}"] if account else []
    if buyer is not None:
        found.append(f"Attn. {buyer.name} <{buyer.email}>")
    return [*found, f"Account {account_id}"]


def printed_lines(rows: list[StoredLine], currency: str) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            description=r.description,
            quantity=r.quantity,
            unit_price=domain.round_money(r.unit_price, currency),
            net_amount=domain.round_money(r.net_amount, currency),
            vat_rate=r.vat_rate,
            vat_amount=domain.round_money(r.vat_amount, currency),
        )
        for r in rows
    ]


def invoice_document(invoice: Invoice, rows: list[StoredLine], buyer: list[str]) -> PrintedDocument:
    currency, tz = invoice.currency, invoice.time_zone
    facts = [
        ("Invoice number", invoice.invoice_number),
        ("Invoice date", local_date(invoice.issued_at, tz).isoformat()),
        ("Due date", invoice.due_date.isoformat()),
        ("Currency", currency),
        (
            "Exchange rate",
            f"1 {domain.price_book()['base_currency']} = "
            f"{invoice.exchange_rate.normalize():f} {currency} ({invoice.channel})",
        ),
        ("Purpose", invoice.purpose),
    ]
    if invoice.installment:
        facts.append(("Installment", f"{invoice.installment} of 3"))
    if invoice.po_number:
        facts.append(("PO number", invoice.po_number))
    if invoice.payer_emails:
        facts.append(("Payers", ", ".join(invoice.payer_emails)))
    gross = domain.round_money(invoice.gross_total, currency)
    if invoice.status == "paid" and invoice.paid_at is not None:
        paid_on = local_date(invoice.paid_at, tz).isoformat()
        payment = [f"Paid {paid_on} by {invoice.payment_method}."]
    elif invoice.payment_method == "invoice":
        payment = [
            f"Please pay {currency} {gross} by {invoice.due_date.isoformat()} to "
            f"{domain.seller()['bank_account']}, quoting {invoice.invoice_number}."
        ]
    else:
        payment = [f"Charged to {invoice.payment_method} at issue: {currency} {gross}."]
    notes = []
    exemption = domain.exemption_note(invoice.tax_exempt_reason)  # R18
    if exemption:
        notes.append(exemption)
    if invoice.notes:
        notes.append(f"Notes: {invoice.notes}")
    return PrintedDocument(
        title="Invoice",
        number=invoice.invoice_number,
        seller=domain.seller(),
        buyer_lines=buyer,
        facts=facts,
        currency=currency,
        lines=printed_lines(rows, currency),
        payment_lines=payment,
        notes=notes,
    )


def credit_note_document(
    note: CreditNote, invoice: Invoice, rows: list[StoredLine], buyer: list[str]
) -> PrintedDocument:
    currency = note.currency
    facts = [
        ("Credit note number", note.credit_note_number),
        ("Date", local_date(note.issued_at, invoice.time_zone).isoformat()),
        ("Credits invoice", invoice.invoice_number),
        ("Currency", currency),
        ("Reason", note.reason),
    ]
    refund = domain.round_money(note.refund_amount, currency)
    if note.expected_settlement_date is not None:
        payment = [
            f"Refund of {currency} {refund} by {note.refund_method}, expected by "
            f"{note.expected_settlement_date.isoformat()}."
        ]
    else:
        payment = ["The invoice was not paid: it is cancelled and nothing is paid back."]
    return PrintedDocument(
        title="Credit note",
        number=note.credit_note_number,
        seller=domain.seller(),
        buyer_lines=buyer,
        facts=facts,
        currency=currency,
        lines=printed_lines(rows, currency),
        payment_lines=payment,
    )
