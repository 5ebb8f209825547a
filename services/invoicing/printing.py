"""What an invoice's and a credit note's PDF say (pdf.py draws them), in the account's language
with its number and date formats (Babel): what bokføringsforskriften § 5-1-1 asks of a sales
document (seller and buyer with address and organisation number, the seller's MVA registration
and "Foretaksregisteret", number, dates, the service period, product names, quantity, prices,
VAT per rate, totals, the exemption or reverse-charge wording) and how to pay (KID and account
for a bank transfer)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal

from shared import formats
from shared.config import Settings
from shared.contracts import BillingIdentity, InvoiceLine
from shared.time.calendar import local_date

from . import domain, kid
from .models import Account, Buyer, CreditNote, Invoice, StoredLine
from .pdf import PrintedDocument, PrintedLine


@dataclass(frozen=True)
class Seller:
    """The seller's identity: configuration (``PLATFORM_SELLER_*``), not data."""

    name: str
    street: str
    postcode: str
    city: str
    country: str
    organisation_number: str
    vat_id: str
    bank_account: str
    iban: str
    bic: str
    email: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Seller:
        return cls(
            name=settings.seller_name,
            street=settings.seller_street,
            postcode=settings.seller_postcode,
            city=settings.seller_city,
            country=settings.seller_country,
            organisation_number=settings.seller_organisation_number,
            vat_id=settings.seller_vat_id,
            bank_account=settings.seller_bank_account,
            iban=settings.seller_iban,
            bic=settings.seller_bic,
            email=settings.seller_email,
        )


@dataclass(frozen=True)
class Party:
    """The buyer as a document names it: the account, its billing identity, its buyer."""

    account_id: uuid.UUID
    account: Account | None
    billing: BillingIdentity | None
    contact: Buyer | None

    @property
    def name(self) -> str:
        return (self.account.name if self.account else None) or "-"

    @property
    def language(self) -> str:
        return self.account.language if self.account else "en"


def identity_at_issue(invoice: Invoice, now: BillingIdentity | None) -> BillingIdentity | None:
    """The buyer's identity as the invoice was issued with it (a document keeps saying what it
    said); an invoice issued before the account had one shows the current one."""
    if invoice.buyer_billing:
        return BillingIdentity.model_validate_json(invoice.buyer_billing)
    return now


# --- words and formats ---------------------------------------------------------------------------

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "invoice": "Invoice",
        "credit_note": "Credit note",
        "invoice_number": "Invoice number",
        "invoice_date": "Invoice date",
        "due_date": "Due date",
        "period": "Service period",
        "credit_note_number": "Credit note number",
        "date": "Date",
        "credits_invoice": "Credits invoice",
        "reason": "Reason",
        "po_number": "Your reference (PO)",
        "installment": "Installment",
        "of": "of",
        "kid": "KID",
        "account_no": "Bank account",
        "org_no": "Org. no.",
        "vat_no": "VAT no.",
        "register": "Foretaksregisteret",
        "bill_to": "Bill to",
        "attn": "Attn.",
        "description": "Description",
        "qty": "Qty",
        "unit_price": "Unit price",
        "net": "Net",
        "vat_pct": "VAT %",
        "vat": "VAT",
        "net_total": "Net total",
        "vat_total": "VAT total",
        "total": "Total",
        "monthly": "monthly subscription",
        "annual": "annual subscription",
        "three_year": "three-year subscription",
        "co_term": "added seats to the end of the term",
        "credit": "Credit",
        "vat_of": "VAT {rate} % of {net}: {vat}",
        "paid": "Paid {date} by {method}.",
        "charged": "Charged to your {method} when issued.",
        "pay": "Please pay {amount} by {date} to account {account} "
        "(IBAN {iban}, BIC {bic}), quoting KID {kid}.",
        "refund": "Refund of {amount} by {method}, expected by {date}.",
        "not_paid": "The invoice was not paid: it is cancelled and nothing is paid back.",
        "exempt": "No VAT charged (exempt): {reason}.",
        "reverse_charge": "Reverse charge: VAT is to be accounted for by the recipient "
        "(VAT Directive art. 196). Omvendt avgiftsplikt.",
        "converted": "Prices converted from {base} at {rate} {currency} per {base}.",
        "card": "card",
        "paypal": "PayPal",
        "invoice_method": "bank transfer",
        "notes": "Notes",
    },
    "nb": {
        "invoice": "Faktura",
        "credit_note": "Kreditnota",
        "invoice_number": "Fakturanummer",
        "invoice_date": "Fakturadato",
        "due_date": "Forfallsdato",
        "period": "Leveringsperiode",
        "credit_note_number": "Kreditnotanummer",
        "date": "Dato",
        "credits_invoice": "Krediterer faktura",
        "reason": "Årsak",
        "po_number": "Deres referanse (PO)",
        "installment": "Avdrag",
        "of": "av",
        "kid": "KID",
        "account_no": "Kontonummer",
        "org_no": "Org.nr.",
        "vat_no": "MVA-nr.",
        "register": "Foretaksregisteret",
        "bill_to": "Faktureres til",
        "attn": "Att.",
        "description": "Beskrivelse",
        "qty": "Antall",
        "unit_price": "Enhetspris",
        "net": "Netto",
        "vat_pct": "MVA %",
        "vat": "MVA",
        "net_total": "Sum eks. MVA",
        "vat_total": "MVA",
        "total": "Å betale",
        "monthly": "månedsabonnement",
        "annual": "årsabonnement",
        "three_year": "treårsabonnement",
        "co_term": "tilleggslisenser ut perioden",
        "credit": "Kreditering",
        "vat_of": "MVA {rate} % av {net}: {vat}",
        "paid": "Betalt {date} med {method}.",
        "charged": "Belastet {method} ved utstedelse.",
        "pay": "Betal {amount} innen {date} til konto {account} "
        "(IBAN {iban}, BIC {bic}) med KID {kid}.",
        "refund": "{amount} tilbakebetales med {method}, innen {date}.",
        "not_paid": "Fakturaen var ikke betalt: den krediteres, og ingenting betales tilbake.",
        "exempt": "Fritatt for merverdiavgift: {reason}.",
        "reverse_charge": "Omvendt avgiftsplikt: kjøper beregner og betaler merverdiavgiften "
        "(Reverse charge, VAT Directive art. 196).",
        "converted": "Prisene er omregnet fra {base} med {rate} {currency} per {base}.",
        "card": "kort",
        "paypal": "PayPal",
        "invoice_method": "bankoverføring",
        "notes": "Merknad",
    },
}
LOCALES = {"en": "en_GB", "nb": "nb_NO"}


def words(language: str) -> dict[str, str]:
    return WORDS.get(language, WORDS["en"])


def money(value: Decimal, currency: str, language: str) -> str:
    """nb: ``21 330,00 kr`` (other currencies by code); en: ``NOK 21,330.00`` (shared with the
    mails: ``shared.formats``)."""
    return formats.money(value, currency, language)


def number(value: Decimal, language: str) -> str:
    return format_decimal(value.normalize(), locale=LOCALES.get(language, "en_GB"))


def day(value: date, language: str) -> str:
    """nb: ``29.11.2026``; en: ``29 Nov 2026``."""
    if language == "nb":
        return format_date(value, "dd.MM.yyyy", locale=LOCALES["nb"])
    return format_date(value, "d MMM yyyy", locale=LOCALES["en"])


def country_name(code: str, language: str) -> str:
    name: str = Locale.parse(LOCALES.get(language, "en_GB")).territories.get(code, code)
    return name


def grouped_organisation_number(number_: str) -> str:
    """923609016 -> 923 609 016 (as Brønnøysundregistrene print it)."""
    if len(number_) == 9 and number_.isdigit():
        return f"{number_[:3]} {number_[3:6]} {number_[6:]}"
    return number_


def bank_account(account: str) -> str:
    """86011117947 -> 8601.11.17947."""
    if len(account) == 11 and account.isdigit():
        return f"{account[:4]}.{account[4:6]}.{account[6:]}"
    return account


def product_name(offering: str | None, language: str) -> str | None:
    """The price book's name (shared with the mails: ``shared.formats``)."""
    return formats.product_name(offering, language)


# --- the parties ---------------------------------------------------------------------------


def seller_lines(seller: Seller, language: str) -> list[str]:
    w = words(language)
    return [
        seller.name,
        seller.street,
        f"{seller.postcode} {seller.city}, {country_name(seller.country, language)}",
        f"{w['org_no']} {grouped_organisation_number(seller.organisation_number)} {w['register']}",
        f"{w['vat_no']} {seller.vat_id}",
        seller.email,
    ]


def buyer_lines(party: Party, billing: BillingIdentity | None) -> list[str]:
    w, language = words(party.language), party.language
    found = [party.name]
    if billing is not None:
        found += billing.address_lines
        found.append(
            f"{billing.postcode} {billing.city}, {country_name(billing.country, language)}"
        )
        if billing.organisation_number:
            found.append(
                f"{w['org_no']} {grouped_organisation_number(billing.organisation_number)}"
            )
        if billing.vat_id:
            found.append(f"{w['vat_no']} {billing.vat_id}")
    elif party.account is not None:
        found.append(country_name(party.account.country, language))
    if party.contact is not None:
        found.append(f"{w['attn']} {party.contact.name} <{party.contact.email}>")
    return found


# --- lines, totals -------------------------------------------------------------------------------


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


def line_name(invoice: Invoice, language: str, stored: str) -> str:
    """The product's name and the term in words (not the stored, code-based description)."""
    name = product_name(invoice.offering, language)
    if name is None or invoice.term is None:
        return stored
    w = words(language)
    text = f"{name}, {w['co_term'] if invoice.purpose == 'co_term' else w[invoice.term]}"
    if invoice.installment:
        text += f", {w['installment'].lower()} {invoice.installment} {w['of']} 3"
    return text


def table(lines: list[InvoiceLine], currency: str, language: str) -> list[PrintedLine]:
    return [
        PrintedLine(
            description=line.description,
            quantity=str(line.quantity),
            unit_price=money(line.unit_price, currency, language),
            net=money(line.net_amount, currency, language),
            vat_rate=number(line.vat_rate, language),
            vat=money(line.vat_amount, currency, language),
        )
        for line in lines
    ]


def totals(
    lines: list[InvoiceLine], currency: str, language: str
) -> tuple[list[str], list[tuple[str, str]]]:
    w = words(language)
    summary = [
        w["vat_of"].format(
            rate=number(part.rate, language),
            net=money(part.net_amount, currency, language),
            vat=money(part.vat_amount, currency, language),
        )
        for part in domain.vat_summary(lines)
    ]
    net = sum((line.net_amount for line in lines), Decimal(0))
    vat = sum((line.vat_amount for line in lines), Decimal(0))
    return summary, [
        (w["net_total"], money(net, currency, language)),
        (w["vat_total"], money(vat, currency, language)),
        (w["total"], money(net + vat, currency, language)),
    ]


def tax_note(tax_exempt_reason: str | None, language: str) -> str | None:
    """R18: a document without VAT says why (the exemption, or the reverse charge)."""
    if not tax_exempt_reason:
        return None
    w = words(language)
    if tax_exempt_reason == domain.REVERSE_CHARGE:
        return w["reverse_charge"]
    return w["exempt"].format(reason=tax_exempt_reason)


def method_word(method: str, language: str) -> str:
    return words(language)["invoice_method" if method == "invoice" else method]


def period_text(invoice: Invoice, language: str) -> str | None:
    if invoice.period_start is None or invoice.period_end is None:
        return None
    return f"{day(invoice.period_start, language)} - {day(invoice.period_end, language)}"


# --- the documents -------------------------------------------------------------------------------


def invoice_document(
    invoice: Invoice, rows: list[StoredLine], party: Party, seller: Seller
) -> PrintedDocument:
    language, currency, tz = party.language, invoice.currency, invoice.time_zone
    w = words(language)
    facts = [
        (w["invoice_number"], invoice.invoice_number),
        (w["invoice_date"], day(local_date(invoice.issued_at, tz), language)),
        (w["due_date"], day(invoice.due_date, language)),
    ]
    period = period_text(invoice, language)
    if period:
        facts.append((w["period"], period))
    if invoice.installment:
        facts.append((w["installment"], f"{invoice.installment} {w['of']} 3"))
    if invoice.po_number:
        facts.append((w["po_number"], invoice.po_number))
    gross = domain.round_money(invoice.gross_total, currency)
    if invoice.status == "paid" and invoice.paid_at is not None:
        paid_on = day(local_date(invoice.paid_at, tz), language)
        payment = [
            w["paid"].format(date=paid_on, method=method_word(invoice.payment_method, language))
        ]
    elif invoice.payment_method == "invoice":
        reference = kid.for_invoice(invoice.invoice_number)
        facts += [(w["kid"], reference), (w["account_no"], bank_account(seller.bank_account))]
        payment = [
            w["pay"].format(
                amount=money(gross, currency, language),
                date=day(invoice.due_date, language),
                account=bank_account(seller.bank_account),
                iban=seller.iban,
                bic=seller.bic,
                kid=reference,
            )
        ]
    else:
        payment = [w["charged"].format(method=method_word(invoice.payment_method, language))]
    notes = []
    exemption = tax_note(invoice.tax_exempt_reason, language)
    if exemption:
        notes.append(exemption)
    price_list = party.account.currency if party.account else currency
    if currency != price_list:  # [ours]: the rate means something only then
        notes.append(
            w["converted"].format(
                base=domain.price_book()["base_currency"],
                rate=number(invoice.exchange_rate, language),
                currency=currency,
            )
        )
    if invoice.notes:
        notes.append(f"{w['notes']}: {invoice.notes}")
    lines = [
        line.model_copy(update={"description": line_name(invoice, language, line.description)})
        for line in printed_lines(rows, currency)
    ]
    summary, sums = totals(lines, currency, language)
    return PrintedDocument(
        title=w["invoice"],
        number=invoice.invoice_number,
        seller_lines=seller_lines(seller, language),
        bill_to=w["bill_to"],
        buyer_lines=buyer_lines(party, identity_at_issue(invoice, party.billing)),
        facts=facts,
        headers=(w["description"], w["qty"], w["unit_price"], w["net"], w["vat_pct"], w["vat"]),
        lines=table(lines, currency, language),
        vat_summary=summary,
        totals=sums,
        payment_lines=payment,
        notes=notes,
    )


def credit_note_document(
    note: CreditNote, invoice: Invoice, rows: list[StoredLine], party: Party, seller: Seller
) -> PrintedDocument:
    language, currency = party.language, note.currency
    w = words(language)
    facts = [
        (w["credit_note_number"], note.credit_note_number),
        (w["date"], day(local_date(note.issued_at, invoice.time_zone), language)),
        (w["credits_invoice"], invoice.invoice_number),
    ]
    period = period_text(invoice, language)
    if period:
        facts.append((w["period"], period))
    facts.append((w["reason"], note.reason))
    refund = domain.round_money(note.refund_amount, currency)
    if note.expected_settlement_date is not None:
        payment = [
            w["refund"].format(
                amount=money(refund, currency, language),
                method=method_word(note.refund_method, language),
                date=day(note.expected_settlement_date, language),
            )
        ]
    else:
        payment = [w["not_paid"]]
    notes = [n for n in [tax_note(invoice.tax_exempt_reason, language)] if n]
    lines = [
        line.model_copy(
            update={
                "description": f"{w['credit']}: "
                + line_name(invoice, language, line.description.removeprefix("Credit: "))
            }
        )
        for line in printed_lines(rows, currency)
    ]
    summary, sums = totals(lines, currency, language)
    return PrintedDocument(
        title=w["credit_note"],
        number=note.credit_note_number,
        seller_lines=seller_lines(seller, language),
        bill_to=w["bill_to"],
        buyer_lines=buyer_lines(party, identity_at_issue(invoice, party.billing)),
        facts=facts,
        headers=(w["description"], w["qty"], w["unit_price"], w["net"], w["vat_pct"], w["vat"]),
        lines=table(lines, currency, language),
        vat_summary=summary,
        totals=sums,
        payment_lines=payment,
        notes=notes,
    )
