"""E-invoices (issue 15): an invoice or credit note as EHF / Peppol BIS Billing 3.0, UBL 2.1 XML,
built with a structured XML API (lxml), never by formatting strings. The tests validate it
against the UBL 2.1 schema and the Peppol BIS 3.0 rules (EN 16931 + Peppol, Norway's among them).

Credit notes carry positive amounts (the document type says it credits); the VAT category is S
(standard rate), Z (0 %), E (exempt, with the reason) or AE (reverse charge)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from lxml import etree as ET

from shared.contracts import BillingIdentity
from shared.errors import Conflict
from shared.time.calendar import local_date

from . import domain, kid
from .models import CreditNote, Invoice, StoredLine
from .printing import Party, Seller, identity_at_issue, product_name

INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CUSTOMIZATION_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
NORWEGIAN_ORGANISATION_NUMBER = "0192"  # ICD/EAS code of Brønnøysundregistrene's register
# Peppol electronic address schemes (EAS) of a buyer's VAT id, by country; a Norwegian buyer is
# addressed by its organisation number (0192), a Danish one by its CVR (0184).
VAT_ID_SCHEME = {
    "AT": "9914",
    "BE": "9925",
    "DE": "9930",
    "ES": "9920",
    "FR": "9957",
    "GB": "9932",
    "IE": "9935",
    "IT": "0211",
    "NL": "9944",
    "PL": "9945",
    "PT": "9946",
}
PAYMENT_MEANS = {"invoice": "30", "card": "48", "paypal": "68"}  # UNCL 4461

Element = ET._Element


def root_of(namespace: str, name: str) -> Element:
    namespaces = {None: namespace, "cac": CAC, "cbc": CBC}
    return ET.Element(f"{{{namespace}}}{name}", nsmap=namespaces)  # type: ignore[arg-type]


def cbc(parent: Element, name: str, text: str, **attributes: str) -> Element:
    element = ET.SubElement(parent, f"{{{CBC}}}{name}", attributes)
    element.text = text
    return element


def cac(parent: Element, name: str) -> Element:
    return ET.SubElement(parent, f"{{{CAC}}}{name}")


def amount(parent: Element, name: str, value: Decimal, currency: str) -> None:
    cbc(parent, name, f"{domain.round_money(value, currency):f}", currencyID=currency)


def percent(rate: Decimal) -> str:
    return f"{rate.quantize(Decimal('0.01')).normalize():f}"


def category(rate: Decimal, tax_exempt_reason: str | None) -> str:
    if tax_exempt_reason == domain.REVERSE_CHARGE:
        return "AE"
    if tax_exempt_reason:
        return "E"
    return "S" if rate > 0 else "Z"


def tax_category(
    parent: Element, name: str, rate: Decimal, reason: str | None, *, with_reason: bool
) -> None:
    element = cac(parent, name)
    code = category(rate, reason)
    cbc(element, "ID", code)
    cbc(element, "Percent", percent(rate))
    if with_reason and code == "AE":
        cbc(element, "TaxExemptionReasonCode", "VATEX-EU-AE")
        cbc(element, "TaxExemptionReason", "Reverse charge")
    elif with_reason and code == "E" and reason:
        cbc(element, "TaxExemptionReason", reason)
    cbc(cac(element, "TaxScheme"), "ID", "VAT")


def address(parent: Element, lines: list[str], postcode: str, city: str, country: str) -> None:
    element = cac(parent, "PostalAddress")
    if lines:
        cbc(element, "StreetName", lines[0])
    if len(lines) > 1:
        cbc(element, "AdditionalStreetName", lines[1])
    if city:
        cbc(element, "CityName", city)
    if postcode:
        cbc(element, "PostalZone", postcode)
    if len(lines) > 2:
        cbc(cac(element, "AddressLine"), "Line", lines[2])
    cbc(cac(element, "Country"), "IdentificationCode", country)


def supplier(root: Element, seller: Seller) -> None:
    party = cac(cac(root, "AccountingSupplierParty"), "Party")
    cbc(party, "EndpointID", seller.organisation_number, schemeID=NORWEGIAN_ORGANISATION_NUMBER)
    cbc(cac(party, "PartyName"), "Name", seller.name)
    address(party, [seller.street], seller.postcode, seller.city, seller.country)
    vat = cac(party, "PartyTaxScheme")
    cbc(vat, "CompanyID", seller.vat_id)
    cbc(cac(vat, "TaxScheme"), "ID", "VAT")
    if seller.country == "NO":  # NO-R-002: registered in Foretaksregisteret
        register = cac(party, "PartyTaxScheme")
        cbc(register, "CompanyID", "Foretaksregisteret")
        cbc(cac(register, "TaxScheme"), "ID", "TAX")
    legal = cac(party, "PartyLegalEntity")
    cbc(legal, "RegistrationName", seller.name)
    cbc(legal, "CompanyID", seller.organisation_number, schemeID=NORWEGIAN_ORGANISATION_NUMBER)
    cbc(cac(party, "Contact"), "ElectronicMail", seller.email)


def electronic_address(billing: BillingIdentity | None) -> tuple[str, str]:
    """The buyer's Peppol address (EAS scheme, identifier), or a 409: an e-invoice is for a
    business, addressed by its register number or VAT id [ours]."""
    if billing is not None:
        if billing.country == "NO" and billing.organisation_number:
            return NORWEGIAN_ORGANISATION_NUMBER, billing.organisation_number
        if billing.country == "DK" and billing.vat_id:
            return "0184", billing.vat_id.removeprefix("DK")
        if billing.vat_id and billing.country in VAT_ID_SCHEME:
            return VAT_ID_SCHEME[billing.country], billing.vat_id
    raise Conflict(
        "no-electronic-address",
        "No e-invoice for this buyer",
        "An e-invoice (EHF / Peppol) goes to a business by its organisation number or VAT id; "
        "the account's billing details had none when the invoice was issued. The PDF is the "
        "invoice.",
    )


def customer(root: Element, buyer: Party, billing: BillingIdentity | None) -> None:
    party = cac(cac(root, "AccountingCustomerParty"), "Party")
    country = billing.country if billing else (buyer.account.country if buyer.account else "NO")
    org = billing.organisation_number if billing else None
    scheme, address_id = electronic_address(billing)
    cbc(party, "EndpointID", address_id, schemeID=scheme)
    cbc(cac(party, "PartyName"), "Name", buyer.name)
    if billing:
        address(party, billing.address_lines, billing.postcode, billing.city, country)
    else:
        address(party, [], "", "", country)
    if billing and billing.vat_id:
        vat = cac(party, "PartyTaxScheme")
        cbc(vat, "CompanyID", billing.vat_id)
        cbc(cac(vat, "TaxScheme"), "ID", "VAT")
    legal = cac(party, "PartyLegalEntity")
    cbc(legal, "RegistrationName", buyer.name)
    if org:
        if country == "NO":
            cbc(legal, "CompanyID", org, schemeID=NORWEGIAN_ORGANISATION_NUMBER)
        else:
            cbc(legal, "CompanyID", org)
    if buyer.contact is not None:
        contact = cac(party, "Contact")
        cbc(contact, "Name", buyer.contact.name)
        cbc(contact, "ElectronicMail", buyer.contact.email)


def period(root: Element, invoice: Invoice) -> None:
    if invoice.period_start is not None and invoice.period_end is not None:
        element = cac(root, "InvoicePeriod")
        cbc(element, "StartDate", invoice.period_start.isoformat())
        cbc(element, "EndDate", invoice.period_end.isoformat())


def totals(root: Element, lines: list[StoredLine], currency: str, reason: str | None) -> None:
    rounded = [
        (
            domain.round_money(abs(line.net_amount), currency),
            domain.round_money(abs(line.vat_amount), currency),
            line.vat_rate.normalize(),
        )
        for line in lines
    ]
    by_rate: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for net, vat, rate in rounded:
        sums = by_rate.get(rate, (Decimal(0), Decimal(0)))
        by_rate[rate] = (sums[0] + net, sums[1] + vat)
    net_total = sum((net for net, _, _ in rounded), Decimal(0))
    vat_total = sum((vat for _, vat, _ in rounded), Decimal(0))
    tax = cac(root, "TaxTotal")
    amount(tax, "TaxAmount", vat_total, currency)
    for rate, (net, vat) in sorted(by_rate.items()):
        subtotal = cac(tax, "TaxSubtotal")
        amount(subtotal, "TaxableAmount", net, currency)
        amount(subtotal, "TaxAmount", vat, currency)
        tax_category(subtotal, "TaxCategory", rate, reason, with_reason=True)
    money = cac(root, "LegalMonetaryTotal")
    amount(money, "LineExtensionAmount", net_total, currency)
    amount(money, "TaxExclusiveAmount", net_total, currency)
    amount(money, "TaxInclusiveAmount", net_total + vat_total, currency)
    amount(money, "PayableAmount", net_total + vat_total, currency)


def document_lines(
    root: Element, kind: str, invoice: Invoice, lines: list[StoredLine], language: str
) -> None:
    currency = invoice.currency
    for number, line in enumerate(lines, start=1):
        element = cac(root, f"{kind}Line")
        cbc(element, "ID", str(number))
        quantity = "InvoicedQuantity" if kind == "Invoice" else "CreditedQuantity"
        cbc(element, quantity, str(line.quantity), unitCode="C62")  # C62: one (a seat)
        amount(element, "LineExtensionAmount", abs(line.net_amount), currency)
        item = cac(element, "Item")
        cbc(item, "Description", line.description)
        cbc(item, "Name", product_name(invoice.offering, language) or line.description)
        if invoice.offering:
            cbc(cac(item, "SellersItemIdentification"), "ID", invoice.offering)
        tax_category(
            item,
            "ClassifiedTaxCategory",
            line.vat_rate,
            invoice.tax_exempt_reason,
            with_reason=False,
        )
        amount(cac(element, "Price"), "PriceAmount", abs(line.unit_price), currency)


def payment_means(root: Element, invoice: Invoice, seller: Seller, due: date | None) -> None:
    means = cac(root, "PaymentMeans")
    cbc(means, "PaymentMeansCode", PAYMENT_MEANS[invoice.payment_method])
    if due is not None:
        cbc(means, "PaymentDueDate", due.isoformat())
    if invoice.payment_method == "invoice":
        cbc(means, "PaymentID", kid.for_invoice(invoice.invoice_number))
        account = cac(means, "PayeeFinancialAccount")
        cbc(account, "ID", seller.iban)
        cbc(cac(account, "FinancialInstitutionBranch"), "ID", seller.bic)


def serialise(root: Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=True)


def invoice_xml(
    invoice: Invoice,
    lines: list[StoredLine],
    buyer: Party,
    seller: Seller,
) -> bytes:
    billing = identity_at_issue(invoice, buyer.billing)
    root = root_of(INVOICE_NS, "Invoice")
    cbc(root, "CustomizationID", CUSTOMIZATION_ID)
    cbc(root, "ProfileID", PROFILE_ID)
    cbc(root, "ID", invoice.invoice_number)
    cbc(root, "IssueDate", local_date(invoice.issued_at, invoice.time_zone).isoformat())
    cbc(root, "DueDate", invoice.due_date.isoformat())
    cbc(root, "InvoiceTypeCode", "380")  # UNCL 1001: commercial invoice
    cbc(root, "DocumentCurrencyCode", invoice.currency)
    cbc(root, "BuyerReference", invoice.po_number or str(invoice.account_id))
    period(root, invoice)
    supplier(root, seller)
    customer(root, buyer, billing)
    payment_means(root, invoice, seller, None)
    totals(root, lines, invoice.currency, invoice.tax_exempt_reason)
    document_lines(root, "Invoice", invoice, lines, buyer.language)
    return serialise(root)


def credit_note_xml(
    note: CreditNote,
    invoice: Invoice,
    lines: list[StoredLine],
    buyer: Party,
    seller: Seller,
) -> bytes:
    billing = identity_at_issue(invoice, buyer.billing)
    root = root_of(CREDIT_NOTE_NS, "CreditNote")
    cbc(root, "CustomizationID", CUSTOMIZATION_ID)
    cbc(root, "ProfileID", PROFILE_ID)
    cbc(root, "ID", note.credit_note_number)
    cbc(root, "IssueDate", local_date(note.issued_at, invoice.time_zone).isoformat())
    cbc(root, "CreditNoteTypeCode", "381")  # UNCL 1001: credit note
    cbc(root, "Note", note.reason)
    cbc(root, "DocumentCurrencyCode", note.currency)
    cbc(root, "BuyerReference", invoice.po_number or str(invoice.account_id))
    period(root, invoice)
    reference = cac(cac(root, "BillingReference"), "InvoiceDocumentReference")
    cbc(reference, "ID", invoice.invoice_number)
    cbc(reference, "IssueDate", local_date(invoice.issued_at, invoice.time_zone).isoformat())
    supplier(root, seller)
    customer(root, buyer, billing)
    totals(root, lines, note.currency, invoice.tax_exempt_reason)
    document_lines(root, "CreditNote", invoice, lines, buyer.language)
    return serialise(root)
