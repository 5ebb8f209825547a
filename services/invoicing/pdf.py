"""PDF invoices and credit notes (an adapter over fpdf2): seller, buyer, number, dates, lines,
VAT per rate (R18), totals, currency, due date and payment details.

The built-in PDF fonts cover Latin-1 (Norwegian letters included); other characters are printed
as "?" rather than failing the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from shared.contracts import InvoiceLine

from .domain import vat_summary


@dataclass(frozen=True)
class PrintedDocument:
    title: str  # "Invoice" or "Credit note"
    number: str
    seller: dict[str, str]
    buyer_lines: list[str]
    facts: list[tuple[str, str]]  # (label, value): dates, references, rate, PO, ...
    currency: str
    lines: list[InvoiceLine]
    payment_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def amount(value: Decimal) -> str:
    return f"{value:,f}"  # amounts arrive rounded to the currency's minor unit


def render(doc: PrintedDocument) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(latin1(f"{doc.title} {doc.number}"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, latin1(f"{doc.title} {doc.number}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    seller = doc.seller
    for text in (
        seller.get("name", ""),
        seller.get("address", ""),
        f"VAT no. {seller.get('vat_number', '')}",
        seller.get("email", ""),
    ):
        pdf.cell(0, 5, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 6, "Bill to", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    for text in doc.buyer_lines:
        pdf.cell(0, 5, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    for label, value in doc.facts:
        pdf.cell(45, 5, latin1(label))
        pdf.cell(0, 5, latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    widths = (80, 14, 28, 28, 14, 26)
    headers = ("Description", "Qty", "Unit price", "Net", "VAT %", "VAT")
    pdf.set_font("Helvetica", "B", 9)
    for width, header in zip(widths, headers, strict=True):
        pdf.cell(width, 6, header, border="B", align="L" if header == "Description" else "R")
    pdf.ln()
    pdf.set_font("Helvetica", "", 8)
    for line in doc.lines:
        cells = (
            line.description,
            str(line.quantity),
            amount(line.unit_price),
            amount(line.net_amount),
            f"{line.vat_rate.normalize():f}",
            amount(line.vat_amount),
        )
        for width, text in zip(widths, cells, strict=True):
            pdf.cell(width, 6, latin1(text), align="L" if text is cells[0] else "R")
        pdf.ln()
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 9)
    for part in vat_summary(doc.lines):
        pdf.cell(
            0,
            5,
            latin1(
                f"VAT {part.rate:f}% of {doc.currency} {amount(part.net_amount)}: "
                f"{doc.currency} {amount(part.vat_amount)}"
            ),
            align="R",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
    net = sum((line.net_amount for line in doc.lines), Decimal(0))
    vat = sum((line.vat_amount for line in doc.lines), Decimal(0))
    for label, total in (("Net total", net), ("VAT total", vat), ("Total", net + vat)):
        pdf.set_font("Helvetica", "B" if label == "Total" else "", 10)
        pdf.cell(
            0,
            6,
            f"{label}: {doc.currency} {amount(total)}",
            align="R",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
    pdf.set_font("Helvetica", "", 9)
    pdf.ln(3)
    for text in doc.payment_lines + doc.notes:
        pdf.multi_cell(0, 5, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
