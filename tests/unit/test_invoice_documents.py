"""Issue 15: what customers read. The KID's check digit, the billing identity's validation, the
invoice and credit-note PDFs read back field by field (bokføringsforskriften § 5-1-1, R18), and
the e-invoices (EHF / Peppol BIS Billing 3.0) validated against the UBL 2.1 schema and the
Peppol BIS 3.0 rules."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pypdf import PdfReader

from services.invoicing import domain, kid, pdf, printing, ubl
from services.invoicing.models import Account, Buyer, CreditNote, Invoice, StoredLine
from services.ordering import billing_identity
from shared.config import Settings
from shared.contracts import BillingIdentity, InvoiceLine
from shared.errors import Conflict, Invalid
from tests import einvoice

SELLER = printing.Seller.from_settings(Settings())
ISSUED = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)

# --- KID (MOD10) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ("7992739871", "3"),  # the Luhn algorithm's textbook example
        ("1234567890", "3"),
        ("000000000", "0"),
        ("0000000001", "8"),
        ("12345678", "2"),
    ],
)
def test_kid_mod10_check_digits_match_known_values(body: str, check: str) -> None:
    assert kid.mod10_check_digit(body) == check
    assert kid.is_valid(body + check)


def test_kid_with_a_wrong_check_digit_or_letters_is_refused() -> None:
    assert not kid.is_valid("79927398710")
    assert not kid.is_valid("12345678901")
    assert not kid.is_valid("12A4")
    with pytest.raises(ValueError, match="digits"):
        kid.mod10_check_digit("12A4")


def test_an_invoices_kid_is_its_number_zero_padded_with_a_mod10_check_digit() -> None:
    reference = kid.for_invoice("INV-0000123")
    assert reference == "0000000123" + kid.mod10_check_digit("0000000123")
    assert len(reference) == 11 and kid.is_valid(reference)


# --- the billing identity, validated per country --------------------------------------------------


def identity(**changes: object) -> BillingIdentity:
    fields: dict[str, object] = {
        "address_lines": ["Storgata 1"],
        "postcode": "0155",
        "city": "Oslo",
        "country": "NO",
        "organisation_number": "923 609 016",
        "vat_id": "NO 923 609 016 MVA",
    }
    return BillingIdentity.model_validate({**fields, **changes})


def test_a_norwegian_organisation_number_and_vat_id_are_kept_compact() -> None:
    checked = billing_identity.checked(identity(), "NO", "billing_details")
    assert checked.organisation_number == "923609016"
    assert checked.vat_id == "NO923609016MVA"
    assert billing_identity.norwegian_organisation_number_ok("974760673")  # Brønnøysund
    assert not billing_identity.norwegian_organisation_number_ok("974760672")


@pytest.mark.parametrize(
    ("changes", "country", "field"),
    [
        ({"organisation_number": "923609017", "vat_id": None}, "NO", "organisation_number"),
        ({"organisation_number": "92360901", "vat_id": None}, "NO", "organisation_number"),
        ({"vat_id": "NO923609016"}, "NO", "vat_id"),  # no "MVA"
        ({"vat_id": "NO974760673MVA"}, "NO", "vat_id"),  # another company's
        ({"postcode": "155"}, "NO", "postcode"),
        ({"country": "SE"}, "NO", "country"),
        (
            {
                "country": "DE",
                "postcode": "10115",
                "organisation_number": None,
                "vat_id": "DE12345",
            },
            "DE",
            "vat_id",
        ),
        (
            {"country": "US", "postcode": "10001", "organisation_number": None, "vat_id": "US1"},
            "US",
            "vat_id",
        ),
    ],
)
def test_a_wrong_organisation_number_vat_id_or_address_is_a_problem_naming_the_field(
    changes: dict[str, object], country: str, field: str
) -> None:
    with pytest.raises(Invalid) as refused:
        billing_identity.checked(identity(**changes), country, "billing_details")
    assert refused.value.extensions["errors"] == [
        {"field": f"billing_details.{field}", "message": refused.value.detail}
    ]


def test_eu_vat_ids_are_checked_by_their_countrys_format() -> None:
    for country, postcode, vat_id in (
        ("DE", "10115", "DE123456789"),
        ("SE", "111 22", "SE556677889901"),
        ("NL", "1011 AB", "NL123456789B01"),
        ("AT", "1010", "ATU12345678"),
    ):
        checked = billing_identity.checked(
            identity(country=country, postcode=postcode, organisation_number=None, vat_id=vat_id),
            country,
            "",
        )
        assert checked.vat_id == vat_id.replace(" ", "")


# --- the documents -----------------------------------------------------------------------------


def account(language: str = "nb", country: str = "NO", exempt: str | None = None) -> Account:
    return Account(
        id=uuid.uuid4(),
        country=country,
        currency="NOK" if country == "NO" else "EUR",
        language=language,
        time_zone="Europe/Oslo",
        tax_exempt_reason=exempt,
        name="Fjordbygg AS",
        test_clock_id=None,
    )


def stored(net: str, rate: str, vat: str, quantity: int = 2) -> StoredLine:
    return StoredLine(
        description="autocad subscription, annual, 2 seat(s)",
        quantity=quantity,
        unit_price=Decimal(net) / quantity,
        net_amount=Decimal(net),
        vat_rate=Decimal(rate),
        vat_amount=Decimal(vat),
    )


def invoice_of(
    buyer: Account,
    line: StoredLine,
    *,
    method: str = "invoice",
    billing: BillingIdentity | None = None,
    reason: str | None = None,
) -> Invoice:
    return Invoice(
        id=uuid.uuid4(),
        invoice_number="INV-0000123",
        account_id=buyer.id,
        subscription_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        purpose="order",
        installment=None,
        renewal_id=None,
        currency=buyer.currency,
        exchange_rate=Decimal("10.8"),
        channel="direct",
        billing_country=buyer.country,
        time_zone="Europe/Oslo",
        net_total=line.net_amount,
        vat_total=line.vat_amount,
        gross_total=line.net_amount + line.vat_amount,
        payment_method=method,  # type: ignore[arg-type]
        payment_token=None,
        status="issued",
        tax_exempt_reason=reason,
        payer_emails=[],
        issued_at=ISSUED,
        due_date=date(2026, 12, 29),
        paid_at=None,
        po_number=None,
        notes=None,
        po_file_name=None,
        po_mime_type=None,
        buyer_billing=billing.model_dump_json() if billing else None,
        offering="autocad",
        term="annual",
        period_start=date(2026, 11, 29),
        period_end=date(2027, 11, 28),
    )


def party(buyer: Account, billing: BillingIdentity | None) -> printing.Party:
    return printing.Party(buyer.id, buyer, billing, Buyer("Kari Nordmann", "kari@example.com"))


def read_back(document: pdf.PrintedDocument) -> str:
    pages = PdfReader(io.BytesIO(pdf.render(document))).pages
    return " ".join(page.extract_text() for page in pages).replace("\xa0", " ")


NO_BUYER = billing_identity.checked(identity(), "NO", "")  # as ordering publishes it
GERMAN_BUYER = billing_identity.checked(
    identity(
        country="DE",
        postcode="10115",
        city="Berlin",
        organisation_number=None,
        vat_id="DE 123 456 789",
    ),
    "DE",
    "",
)


def test_r18_a_norwegian_invoice_pdf_carries_every_field_of_bokforingsforskriften_5_1_1() -> None:
    buyer = account("nb")
    line = stored("34128.00", "25", "8532.00")
    invoice = invoice_of(buyer, line, billing=NO_BUYER)
    text = read_back(printing.invoice_document(invoice, [line], party(buyer, None), SELLER))
    reference = kid.for_invoice("INV-0000123")
    expected = [
        "Faktura INV-0000123",
        # the seller: name, address, organisation number in Foretaksregisteret, MVA registration
        "Subscriptions Nordic AS",
        "Postboks 1",
        "0101 Oslo, Norge",
        "Org.nr. 923 609 016 Foretaksregisteret",
        "MVA-nr. NO923609016MVA",
        # the buyer: name, address, organisation number (as the invoice was issued with)
        "Fjordbygg AS",
        "Storgata 1",
        "0155 Oslo, Norge",
        "Org.nr. 923 609 016",
        # number, dates, the service period, in Norwegian formats
        "Fakturanummer INV-0000123",
        "Fakturadato 29.11.2026",
        "Forfallsdato 29.12.2026",
        "Leveringsperiode 29.11.2026 - 28.11.2027",
        # the product by name, quantity, unit price, net, VAT rate and amount, totals (R18)
        "AutoCAD, årsabonnement",
        "17 064,00 kr",
        "34 128,00 kr",
        "MVA 25 % av 34 128,00 kr: 8 532,00 kr",
        "Sum eks. MVA: 34 128,00 kr",
        "Å betale: 42 660,00 kr",
        # a bank transfer: the KID and the account to pay to
        f"KID {reference}",
        "Kontonummer 8601.11.17947",
        "Betal 42 660,00 kr innen 29.12.2026 til konto 8601.11.17947",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    for noise in (str(buyer.id), "Exchange rate", "(direct)", "Purpose", "autocad subscription"):
        assert noise not in text


def test_an_english_invoice_uses_english_number_and_date_formats() -> None:
    buyer = account("en")
    line = stored("34128.00", "25", "8532.00")
    invoice = invoice_of(buyer, line, method="card", billing=NO_BUYER)
    text = read_back(printing.invoice_document(invoice, [line], party(buyer, None), SELLER))
    for fragment in (
        "Invoice INV-0000123",
        "Invoice date 29 Nov 2026",
        "Service period 29 Nov 2026 - 28 Nov 2027",
        "AutoCAD, annual subscription",
        "Total: NOK 42,660.00",
        "VAT 25 % of NOK 34,128.00: NOK 8,532.00",
        "Org. no. 923 609 016 Foretaksregisteret",
        "Charged to your card when issued.",
    ):
        assert fragment in text, fragment
    assert "KID" not in text  # a card invoice is not paid by bank transfer


def test_r18_an_eu_business_with_a_vat_id_reads_reverse_charge_and_an_exempt_account_why() -> None:
    german = GERMAN_BUYER
    buyer = account("en", "DE")
    line = stored("3634.00", "0", "0.00")
    invoice = invoice_of(buyer, line, billing=german, reason=domain.REVERSE_CHARGE)
    text = read_back(printing.invoice_document(invoice, [line], party(buyer, None), SELLER))
    assert "Reverse charge" in text and "Omvendt avgiftsplikt" in text
    assert "VAT no. DE123456789" in text and "10115 Berlin, Germany" in text

    exempt = account("nb", exempt="Internasjonal organisasjon (mval. § 6-33)")
    line = stored("34128.00", "0", "0.00")
    invoice = invoice_of(exempt, line, reason=exempt.tax_exempt_reason)
    text = read_back(printing.invoice_document(invoice, [line], party(exempt, NO_BUYER), SELLER))
    assert "Fritatt for merverdiavgift: Internasjonal organisasjon (mval. § 6-33)." in text


def credit_note_for(invoice: Invoice) -> CreditNote:
    return CreditNote(
        id=uuid.uuid4(),
        credit_note_number="CN-0000007",
        invoice_id=invoice.id,
        refund_id=uuid.uuid4(),
        account_id=invoice.account_id,
        subscription_id=invoice.subscription_id,
        currency=invoice.currency,
        net_total=-invoice.net_total,
        vat_total=-invoice.vat_total,
        gross_total=-invoice.gross_total,
        reason="Kjøpt ved en feil",
        issued_at=datetime(2026, 12, 4, 10, 0, tzinfo=UTC),
        refund_method="card",
        refund_amount=invoice.gross_total,
        refund_reference="re_1",
        expected_settlement_date=date(2026, 12, 15),
    )


def negated(line: StoredLine) -> StoredLine:
    return StoredLine(
        description=f"Credit: {line.description}",
        quantity=line.quantity,
        unit_price=-line.unit_price,
        net_amount=-line.net_amount,
        vat_rate=line.vat_rate,
        vat_amount=-line.vat_amount,
    )


def test_a_credit_note_pdf_names_the_invoice_it_credits_the_period_and_the_refund() -> None:
    buyer = account("nb")
    line = stored("34128.00", "25", "8532.00")
    invoice = invoice_of(buyer, line, method="card", billing=NO_BUYER)
    note = credit_note_for(invoice)
    text = read_back(
        printing.credit_note_document(
            note, invoice, [negated(line)], party(buyer, NO_BUYER), SELLER
        )
    )
    for fragment in (
        "Kreditnota CN-0000007",
        "Dato 04.12.2026",
        "Krediterer faktura INV-0000123",
        "Leveringsperiode 29.11.2026 - 28.11.2027",
        "Kreditering: AutoCAD, årsabonnement",
        "Å betale: -42 660,00 kr",
        "42 660,00 kr tilbakebetales med kort, innen 15.12.2026.",
        "Org.nr. 923 609 016 Foretaksregisteret",
        "0155 Oslo, Norge",
    ):
        assert fragment in text, fragment


# --- e-invoices: UBL 2.1 schema and Peppol BIS Billing 3.0 rules --------------------------------


def assert_valid(document: bytes) -> None:
    assert einvoice.schema_errors(document) == []
    findings = einvoice.rule_findings(document)
    assert einvoice.fatal(findings) == [], findings


def test_a_ubl_invoice_to_a_norwegian_business_validates_as_peppol_bis_3() -> None:
    buyer = account("nb")
    line = stored("34128.00", "25", "8532.00")
    invoice = invoice_of(buyer, line, billing=NO_BUYER)
    document = ubl.invoice_xml(invoice, [line], party(buyer, NO_BUYER), SELLER)
    assert_valid(document)
    text = document.decode()
    assert "<cbc:PaymentID>" + kid.for_invoice("INV-0000123") + "</cbc:PaymentID>" in text
    assert "<cbc:CompanyID>Foretaksregisteret</cbc:CompanyID>" in text  # NO-R-002
    assert "<cbc:Name>AutoCAD</cbc:Name>" in text and "<cbc:StartDate>2026-11-29" in text


def test_r18_a_ubl_invoice_with_reverse_charge_or_exemption_validates() -> None:
    german = GERMAN_BUYER
    buyer = account("en", "DE")
    line = stored("3634.00", "0", "0.00")
    invoice = invoice_of(buyer, line, method="card", billing=german, reason=domain.REVERSE_CHARGE)
    document = ubl.invoice_xml(invoice, [line], party(buyer, german), SELLER)
    assert_valid(document)
    assert b"VATEX-EU-AE" in document

    exempt = account("nb", exempt="Internasjonal organisasjon")
    line = stored("34128.00", "0", "0.00")
    invoice = invoice_of(exempt, line, reason=exempt.tax_exempt_reason)
    assert_valid(ubl.invoice_xml(invoice, [line], party(exempt, NO_BUYER), SELLER))


def test_a_buyer_without_organisation_number_or_vat_id_gets_no_e_invoice() -> None:
    """[ours] Peppol addresses a business by its register number or VAT id: 409, not a guess."""
    buyer = account("nb")
    line = stored("34128.00", "25", "8532.00")
    with pytest.raises(Conflict) as refused:
        ubl.invoice_xml(invoice_of(buyer, line), [line], party(buyer, None), SELLER)
    assert refused.value.slug == "no-electronic-address"


def test_a_ubl_credit_note_validates_as_peppol_bis_3() -> None:
    buyer = account("nb")
    line = stored("34128.00", "25", "8532.00")
    invoice = invoice_of(buyer, line, method="card", billing=NO_BUYER)
    note = credit_note_for(invoice)
    document = ubl.credit_note_xml(note, invoice, [negated(line)], party(buyer, NO_BUYER), SELLER)
    assert_valid(document)
    assert b'<cbc:PayableAmount currencyID="NOK">42660.00</cbc:PayableAmount>' in document


def test_the_validators_do_refuse_a_broken_e_invoice() -> None:
    """The checks above could fail: an element UBL does not know breaks the schema, a VAT id
    without "MVA" breaks Norway's rule NO-R-001."""
    buyer = account("nb")
    line = stored("34128.00", "25", "8532.00")
    document = ubl.invoice_xml(
        invoice_of(buyer, line, billing=NO_BUYER), [line], party(buyer, NO_BUYER), SELLER
    )
    broken = document.replace(b"cbc:DueDate", b"cbc:PayByDate")
    assert einvoice.schema_errors(broken) != []
    wrong_vat = document.replace(b"NO923609016MVA", b"NO923609016")
    assert any(f.rule == "NO-R-001" for f in einvoice.fatal(einvoice.rule_findings(wrong_vat)))


def test_printed_lines_keep_invoice_line_amounts() -> None:
    """The table's amounts are the stored lines' rounded to the currency (unchanged rule)."""
    line = stored("100.005", "25", "25.00125", quantity=1)
    [printed] = printing.printed_lines([line], "NOK")
    assert printed == InvoiceLine(
        description=line.description,
        quantity=1,
        unit_price=Decimal("100.01"),
        net_amount=Decimal("100.01"),
        vat_rate=Decimal(25),
        vat_amount=Decimal("25.00"),
    )


def test_documents_name_products_as_the_catalogue_does() -> None:
    """The price book's product names are ordering's catalogue names (one product, one name)."""
    from services.ordering.catalogue import catalogue

    names = domain.price_book()["offering_names"]
    assert {code: n["en"] for code, n in names.items()} == {
        code: offering.name for code, offering in catalogue().offerings.items()
    }
