"""PDF invoices and credit notes (an adapter over fpdf2): draws what printing.py says, already
worded and formatted in the account's language.

The built-in PDF fonts cover Latin-1 (Norwegian letters included); other characters are printed
as "?" rather than failing the document (a minus sign as "-").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fpdf import FPDF
from fpdf.enums import XPos, YPos


@dataclass(frozen=True)
class PrintedLine:
    description: str
    quantity: str
    unit_price: str
    net: str
    vat_rate: str
    vat: str


@dataclass(frozen=True)
class PrintedDocument:
    title: str  # "Invoice", "Faktura", "Credit note", "Kreditnota"
    number: str
    seller_lines: list[str]
    bill_to: str
    buyer_lines: list[str]
    facts: list[tuple[str, str]]  # (label, value): number, dates, period, KID, PO ...
    headers: tuple[str, str, str, str, str, str]
    lines: list[PrintedLine]
    vat_summary: list[str]
    totals: list[tuple[str, str]]  # the last one is the total to pay
    payment_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def latin1(text: str) -> str:
    return text.replace("\u2212", "-").encode("latin-1", "replace").decode("latin-1")


def render(doc: PrintedDocument) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(latin1(f"{doc.title} {doc.number}"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, latin1(f"{doc.title} {doc.number}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    for text in doc.seller_lines:
        pdf.cell(0, 5, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 6, latin1(doc.bill_to), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    for text in doc.buyer_lines:
        pdf.cell(0, 5, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    for label, value in doc.facts:
        pdf.cell(45, 5, latin1(label))
        pdf.cell(0, 5, latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    widths = (74, 14, 30, 30, 14, 28)
    pdf.set_font("Helvetica", "B", 9)
    for index, (width, header) in enumerate(zip(widths, doc.headers, strict=True)):
        pdf.cell(width, 6, latin1(header), border="B", align="L" if index == 0 else "R")
    pdf.ln()
    pdf.set_font("Helvetica", "", 8)
    for line in doc.lines:
        cells = (line.description, line.quantity, line.unit_price, line.net, line.vat_rate)
        pdf.multi_cell(widths[0], 6, latin1(cells[0]), new_x=XPos.RIGHT, new_y=YPos.TOP)
        for width, text in zip(widths[1:], (*cells[1:], line.vat), strict=True):
            pdf.cell(width, 6, latin1(text), align="R")
        pdf.ln()
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 9)
    for text in doc.vat_summary:
        pdf.cell(0, 5, latin1(text), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for index, (label, total) in enumerate(doc.totals):
        pdf.set_font("Helvetica", "B" if index == len(doc.totals) - 1 else "", 10)
        pdf.cell(0, 6, latin1(f"{label}: {total}"), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    pdf.ln(3)
    for text in doc.payment_lines + doc.notes:
        pdf.multi_cell(0, 5, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
