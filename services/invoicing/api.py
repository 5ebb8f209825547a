"""Invoicing's HTTP door.

Buyers and payers read their account's invoices and credit notes (R8: admins who are not the
buyer get 403, strangers 404) and give an invoice a PO number, notes and a PO document until it
is paid (R22). Operators record bank-transfer payments and feed exchange rates (R19).
Every write takes an ``Idempotency-Key``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared import people
from shared.auth import Principal, verify_token
from shared.contracts import Contract, Envelope, InvoiceLine
from shared.db import Conn
from shared.idempotency import check_key, request_fingerprint, run_once
from shared.outbox import Outbox
from shared.problems import Problem, not_found
from shared.runtime import Runtime, as_json, runtime_of
from shared.time.calendar import local_date as local_day

from . import domain, pdf, repository
from .handlers import Billing, recompute_exchange_rates, settle_invoice

router = APIRouter(prefix="/v1", tags=["invoicing"])
Authorization = Annotated[str | None, Header()]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
INVOICE_READERS = {"buyer", "payer"}  # R8: admins who are not the buyer get 403
PO_EDITORS = {"buyer", "payer"}  # R22: whoever settles the invoice may add its PO
RENEWAL_EDITORS = {"buyer"}  # R8: renewal data is the buyer's; payers see invoices only
MAX_PO_DOCUMENT_BYTES = 5 * 1024 * 1024


# --- bodies -------------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoDocument(Body):
    file_name: str = Field(min_length=1, max_length=200)
    mime_type: str = Field("application/pdf", max_length=100)
    content_base64: str = Field(min_length=1)


class PurchaseOrderChange(Body):
    """R22: fields present replace what is stored; null clears; absent stays."""

    po_number: str | None = Field(None, max_length=100)
    notes: str | None = Field(None, max_length=2000)
    po_document: PoDocument | None = None


class BankPayment(Body):
    amount: Decimal = Field(gt=0)
    reference: str = Field(min_length=1, max_length=200)
    paid_at: AwareDatetime | None = None


class MarketRate(Body):
    currency: str = Field(min_length=3, max_length=3)
    rate: Decimal = Field(gt=0)
    as_of: date


class MarketRates(Body):
    rates: list[MarketRate] = Field(min_length=1, max_length=1000)


class Recompute(Body):
    quarter_start: date


# --- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxEmit:
    """Emits from an HTTP write, in the write's transaction."""

    conn: Conn
    outbox: Outbox

    async def __call__(
        self,
        event: Contract,
        *,
        account_id: uuid.UUID | None = None,
        subscription_id: uuid.UUID | None = None,
    ) -> Envelope:
        if account_id is None:
            raise ValueError("an event needs an account id")
        return await self.outbox.emit(
            self.conn, event, account_id=account_id, subscription_id=subscription_id
        )


def require_operator(who: Principal) -> None:
    if who.kind != "operator":
        raise Problem(403, "operator-required", "Operators only", "Use an operator token.")


def money(value: Decimal, currency: str) -> str:
    return str(domain.round_money(value, currency))


def line_view(row: asyncpg.Record, currency: str) -> dict[str, Any]:
    return {
        "description": row["description"],
        "quantity": row["quantity"],
        "unit_price": money(row["unit_price"], currency),
        "net_amount": money(row["net_amount"], currency),
        "vat_rate": str(row["vat_rate"].normalize()),
        "vat_amount": money(row["vat_amount"], currency),
    }


INVOICE_FIELDS = (
    "id invoice_number account_id subscription_id order_id purpose installment renewal_id "
    "currency exchange_rate channel billing_country payment_method status tax_exempt_reason "
    "payer_emails issued_at due_date paid_at po_number notes po_file_name po_mime_type"
).split()


def invoice_view(row: asyncpg.Record, lines: list[asyncpg.Record] | None = None) -> Any:
    currency = row["currency"]
    view: dict[str, Any] = {name: row[name] for name in INVOICE_FIELDS}
    for total in ("net_total", "vat_total", "gross_total"):
        view[total] = money(row[total], currency)
    view["exchange_rate"] = str(row["exchange_rate"].normalize())  # exact, not a float
    view["has_po_document"] = row["po_file_name"] is not None
    if lines is not None:
        view["lines"] = [line_view(line, currency) for line in lines]
    return as_json(view)


def credit_note_view(row: asyncpg.Record, lines: list[asyncpg.Record] | None = None) -> Any:
    currency = row["currency"]
    view = {k: v for k, v in dict(row).items() if k not in ("net_total", "vat_total")}
    for total in ("net_total", "vat_total", "gross_total", "refund_amount"):
        view[total] = money(row[total], currency)
    if lines is not None:
        view["lines"] = [line_view(line, currency) for line in lines]
    return as_json(view)


async def readable_invoice(
    rt: Runtime, who: Principal, invoice_id: uuid.UUID, allowed: set[str] = INVOICE_READERS
) -> asyncpg.Record:
    invoice = await repository.get_invoice(rt.pool, invoice_id)
    if invoice is None:
        raise not_found("invoice")
    await people.require_role(rt.pool, who, invoice["account_id"], allowed, "invoice")
    return invoice


async def idempotent(
    rt: Runtime,
    request: Request,
    who: Principal,
    key: str | None,
    body: Any,
    work: Any,
) -> JSONResponse:
    status, answer = await run_once(
        rt.pool,
        scope=f"invoicing:{who.subject}",
        key=check_key(key),
        fingerprint=request_fingerprint(request.method, request.url.path, body),
        work=work,
    )
    return JSONResponse(answer, status_code=status)


def decode_document(change: PurchaseOrderChange) -> bytes | None:
    if change.po_document is None:
        return None
    try:
        content = base64.b64decode(change.po_document.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(
            422, "po-document-invalid", "PO document is not base64", "Send content_base64."
        ) from None
    if len(content) > MAX_PO_DOCUMENT_BYTES:
        raise Problem(
            413, "po-document-too-large", "PO document too large", "At most 5 MiB per document."
        )
    return content


def merged_purchase_order(change: PurchaseOrderChange, current: dict[str, Any]) -> dict[str, Any]:
    """R22: the PO details after the change (present fields replace, absent ones stay)."""
    given = change.model_fields_set
    merged = dict(current)
    if "po_number" in given:
        merged["po_number"] = change.po_number
    if "notes" in given:
        merged["notes"] = change.notes
    if "po_document" in given:
        doc = change.po_document
        merged["document"] = decode_document(change)
        merged["file_name"] = doc.file_name if doc else None
        merged["mime_type"] = doc.mime_type if doc else None
    return merged


# --- invoices -----------------------------------------------------------------------------------


@router.get("/accounts/{account_id}/invoices")
async def list_invoices(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    await people.require_role(rt.pool, who, account_id, INVOICE_READERS, "account")
    invoices = await repository.list_invoices(rt.pool, account_id)
    return {"items": [invoice_view(i) for i in invoices]}


@router.get("/invoices/{invoice_id}.pdf", response_class=Response)
async def invoice_pdf(
    invoice_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> Response:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    invoice = await readable_invoice(rt, who, invoice_id)
    lines = await repository.invoice_lines(rt.pool, invoice_id)
    document = await printed_invoice(rt, invoice, lines)
    return Response(
        pdf.render(document),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{invoice["invoice_number"]}.pdf"'},
    )


@router.get("/invoices/{invoice_id}")
async def get_invoice(
    invoice_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> Any:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    invoice = await readable_invoice(rt, who, invoice_id)
    return invoice_view(invoice, await repository.invoice_lines(rt.pool, invoice_id))


@router.patch("/invoices/{invoice_id}")
async def change_purchase_order(
    invoice_id: uuid.UUID,
    change: PurchaseOrderChange,
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R22: PO number, notes and PO document, until the invoice is paid."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    await readable_invoice(rt, who, invoice_id, PO_EDITORS)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        invoice = await repository.lock_invoice(conn, invoice_id)
        assert invoice is not None
        if not domain.po_editable(invoice["status"]):
            raise Problem(
                409,
                "invoice-not-editable",
                "The invoice can no longer be changed",
                f"Invoice {invoice['invoice_number']} is {invoice['status']}; a PO number, "
                "notes and a PO document may be given only before it is paid (R22).",
            )
        po = merged_purchase_order(
            change,
            {
                "po_number": invoice["po_number"],
                "notes": invoice["notes"],
                "document": invoice["po_document"],
                "file_name": invoice["po_file_name"],
                "mime_type": invoice["po_mime_type"],
            },
        )
        await repository.update_purchase_order(conn, invoice_id, **po)
        updated = await repository.get_invoice(conn, invoice_id)
        assert updated is not None
        return 200, invoice_view(updated)

    body = change.model_dump(mode="json", exclude_unset=True)
    return await idempotent(rt, request, who, idempotency_key, body, work)


@router.get("/invoices/{invoice_id}/po-document", response_class=Response)
async def purchase_order_document(
    invoice_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> Response:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    invoice = await readable_invoice(rt, who, invoice_id)
    if invoice["po_document"] is None:
        raise not_found("PO document")
    return Response(
        bytes(invoice["po_document"]),
        media_type=invoice["po_mime_type"] or "application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{invoice["po_file_name"]}"'},
    )


@router.put("/subscriptions/{subscription_id}/renewal-purchase-order")
async def set_renewal_purchase_order(
    subscription_id: uuid.UUID,
    change: PurchaseOrderChange,
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R22: the PO details for the coming renewal invoice, given before the renewal date."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    sub = await repository.get_subscription(rt.pool, subscription_id)
    if sub is None:
        raise not_found("subscription")
    await people.require_role(rt.pool, who, sub["account_id"], RENEWAL_EDITORS, "subscription")

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        doc = change.po_document
        await repository.set_renewal_purchase_order(
            conn,
            subscription_id,
            po_number=change.po_number,
            notes=change.notes,
            document=decode_document(change),
            file_name=doc.file_name if doc else None,
            mime_type=doc.mime_type if doc else None,
        )
        return 200, {
            "subscription_id": str(subscription_id),
            "po_number": change.po_number,
            "notes": change.notes,
            "po_file_name": doc.file_name if doc else None,
        }

    body = change.model_dump(mode="json")
    return await idempotent(rt, request, who, idempotency_key, body, work)


# --- credit notes -------------------------------------------------------------------------------


@router.get("/accounts/{account_id}/credit-notes")
async def list_credit_notes(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    await people.require_role(rt.pool, who, account_id, INVOICE_READERS, "account")
    notes = await repository.list_credit_notes(rt.pool, account_id)
    return {"items": [credit_note_view(n) for n in notes]}


async def readable_credit_note(
    rt: Runtime, who: Principal, credit_note_id: uuid.UUID
) -> asyncpg.Record:
    note = await repository.get_credit_note(rt.pool, credit_note_id)
    if note is None:
        raise not_found("credit note")
    await people.require_role(rt.pool, who, note["account_id"], INVOICE_READERS, "credit note")
    return note


@router.get("/credit-notes/{credit_note_id}.pdf", response_class=Response)
async def credit_note_pdf(
    credit_note_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> Response:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    note = await readable_credit_note(rt, who, credit_note_id)
    lines = await repository.credit_note_lines(rt.pool, credit_note_id)
    document = await printed_credit_note(rt, note, lines)
    return Response(
        pdf.render(document),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{note["credit_note_number"]}.pdf"'},
    )


@router.get("/credit-notes/{credit_note_id}")
async def get_credit_note(
    credit_note_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> Any:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    note = await readable_credit_note(rt, who, credit_note_id)
    return credit_note_view(note, await repository.credit_note_lines(rt.pool, credit_note_id))


# --- operators ----------------------------------------------------------------------------------


@router.post("/operator/invoices/{invoice_id}/bank-payments", status_code=201)
async def record_bank_payment(
    invoice_id: uuid.UUID,
    payment: BankPayment,
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """A bank transfer received for an invoice: PaymentSucceeded and InvoicePaid."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    require_operator(who)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        invoice = await repository.lock_invoice(conn, invoice_id)
        if invoice is None:
            raise not_found("invoice")
        if invoice["status"] != "issued":
            raise Problem(
                409,
                "invoice-not-open",
                "The invoice is not open",
                f"Invoice {invoice['invoice_number']} is {invoice['status']}.",
            )
        due = domain.round_money(invoice["gross_total"], invoice["currency"])
        if payment.amount != due:
            raise Problem(
                422,
                "amount-mismatch",
                "The amount is not the invoice's total",
                f"Invoice {invoice['invoice_number']} is {invoice['currency']} {due}.",
                expected=str(due),
            )
        paid_at = payment.paid_at or (await rt.clock_for(conn, invoice["account_id"])).now()
        payment_id = await settle_invoice(
            Billing(conn, OutboxEmit(conn, rt.outbox), paid_at),
            invoice,
            method="invoice",
            reference=payment.reference,
        )
        return 201, {
            "payment_id": str(payment_id),
            "invoice_id": str(invoice_id),
            "amount": str(due),
            "currency": invoice["currency"],
            "paid_at": paid_at.isoformat(),
        }

    body = payment.model_dump(mode="json")
    return await idempotent(rt, request, who, idempotency_key, body, work)


def checked_currency(currency: str) -> str:
    if currency not in domain.price_book()["initial_rates_from_base"]:
        raise Problem(
            422,
            "unknown-currency",
            "Unknown currency",
            f"{currency} is not a currency of the price book.",
        )
    return currency


@router.post("/operator/exchange-rates/market", status_code=201)
async def record_market_rates(
    rates: MarketRates,
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R19: market rates from the base currency (USD), as fed by an operator."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    require_operator(who)
    rows = [(checked_currency(r.currency), r.rate, r.as_of) for r in rates.rates]
    return await store_market_rates(rt, request, who, idempotency_key, rows, "api")


@router.post(
    "/operator/exchange-rates/market.csv",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def import_market_rates_csv(
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R19: a CSV of market rates: a header ``currency,rate,as_of`` then one rate a line."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    require_operator(who)
    text = (await request.body()).decode("utf-8-sig", errors="replace")
    rows = parse_market_rates_csv(text)
    return await store_market_rates(rt, request, who, idempotency_key, rows, "csv")


def parse_market_rates_csv(text: str) -> list[tuple[str, Decimal, date]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or {"currency", "rate", "as_of"} - set(reader.fieldnames):
        raise Problem(
            422, "csv-header", "CSV header missing", "The first line must be currency,rate,as_of."
        )
    rows: list[tuple[str, Decimal, date]] = []
    errors: list[dict[str, Any]] = []
    for number, record in enumerate(reader, start=2):
        try:
            rate = Decimal(record["rate"].strip())
            if rate <= 0:
                raise ValueError("rate must be positive")
            currency = checked_currency(record["currency"].strip().upper())
            rows.append((currency, rate, date.fromisoformat(record["as_of"].strip())))
        except (InvalidOperation, ValueError, AttributeError, Problem) as error:
            errors.append({"line": number, "message": str(error) or type(error).__name__})
    if errors or not rows:
        raise Problem(
            422,
            "csv-invalid",
            "The CSV has invalid lines",
            f"{len(errors)} invalid line(s); nothing was stored." if errors else "No rates.",
            errors=errors,
        )
    return rows


async def store_market_rates(
    rt: Runtime,
    request: Request,
    who: Principal,
    key: str | None,
    rows: list[tuple[str, Decimal, date]],
    source: str,
) -> JSONResponse:
    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        await repository.insert_market_rates(conn, rows, source, rt.clock.now())
        return 201, {"recorded": len(rows), "source": source}

    body = [[c, str(r), d.isoformat()] for c, r, d in rows]
    return await idempotent(rt, request, who, key, body, work)


@router.post("/operator/exchange-rates/recompute")
async def recompute_rates(
    recompute: Recompute,
    request: Request,
    authorization: Authorization = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R19: compute a quarter's applied rates now (the quarterly timer does the same)."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    require_operator(who)
    quarter = recompute.quarter_start
    if not domain.is_quarter_start(quarter):
        raise Problem(
            422,
            "not-a-quarter-start",
            "Not the first day of a quarter",
            "Applied rates change on 1 January, 1 April, 1 July and 1 October (R19).",
        )

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        inserted = await recompute_exchange_rates(conn, quarter, rt.clock.now())
        return 200, {"quarter_start": quarter.isoformat(), "rates_added": inserted}

    body = recompute.model_dump(mode="json")
    return await idempotent(rt, request, who, idempotency_key, body, work)


@router.get("/operator/exchange-rates")
async def exchange_rates(
    request: Request,
    authorization: Authorization = None,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    channel: Annotated[str | None, Query(pattern="^(direct|partner)$")] = None,
) -> dict[str, Any]:
    """R19: the applied rates with their history, and the initial rates they started from."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    require_operator(who)
    history = await repository.applied_rate_history(rt.pool, currency, channel)
    return {
        "base_currency": domain.price_book()["base_currency"],
        "initial_rates": domain.price_book()["initial_rates_from_base"],
        "history": [rate_view(r) for r in history],
    }


def rate_view(row: asyncpg.Record) -> Any:
    rates = {k: str(row[k]) for k in ("rate", "previous_rate", "market_rate")}
    return as_json({**dict(row), **rates})  # rates as exact decimal strings


# --- printing -----------------------------------------------------------------------------------


def printed_lines(rows: list[asyncpg.Record], currency: str) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            description=r["description"],
            quantity=r["quantity"],
            unit_price=domain.round_money(r["unit_price"], currency),
            net_amount=domain.round_money(r["net_amount"], currency),
            vat_rate=r["vat_rate"],
            vat_amount=domain.round_money(r["vat_amount"], currency),
        )
        for r in rows
    ]


async def buyer_lines(rt: Runtime, account_id: uuid.UUID) -> list[str]:
    account = await repository.get_account(rt.pool, account_id)
    buyer = await repository.buyer_of(rt.pool, account_id)
    found = [account["name"] or "", f"Country: {account['country']}"] if account else []
    if buyer is not None:
        found.append(f"Attn. {buyer['name']} <{buyer['email']}>")
    return [*found, f"Account {account_id}"]


def local_date(at: datetime, time_zone: str) -> str:
    return local_day(at, time_zone).isoformat()


async def printed_invoice(
    rt: Runtime, invoice: asyncpg.Record, rows: list[asyncpg.Record]
) -> pdf.PrintedDocument:
    currency, tz = invoice["currency"], invoice["time_zone"]
    facts = [
        ("Invoice number", invoice["invoice_number"]),
        ("Invoice date", local_date(invoice["issued_at"], tz)),
        ("Due date", invoice["due_date"].isoformat()),
        ("Currency", currency),
        (
            "Exchange rate",
            f"1 {domain.price_book()['base_currency']} = "
            f"{invoice['exchange_rate'].normalize():f} {currency} ({invoice['channel']})",
        ),
        ("Purpose", invoice["purpose"]),
    ]
    if invoice["installment"]:
        facts.append(("Installment", f"{invoice['installment']} of 3"))
    if invoice["po_number"]:
        facts.append(("PO number", invoice["po_number"]))
    if invoice["payer_emails"]:
        facts.append(("Payers", ", ".join(invoice["payer_emails"])))
    gross = domain.round_money(invoice["gross_total"], currency)
    if invoice["status"] == "paid" and invoice["paid_at"] is not None:
        payment = [f"Paid {local_date(invoice['paid_at'], tz)} by {invoice['payment_method']}."]
    elif invoice["payment_method"] == "invoice":
        payment = [
            f"Please pay {currency} {gross} by {invoice['due_date'].isoformat()} to "
            f"{domain.seller()['bank_account']}, quoting {invoice['invoice_number']}."
        ]
    else:
        payment = [f"Charged to {invoice['payment_method']} at issue: {currency} {gross}."]
    notes = []
    if invoice["tax_exempt_reason"]:
        notes.append(f"VAT exemption: {invoice['tax_exempt_reason']}")  # R18
    if invoice["notes"]:
        notes.append(f"Notes: {invoice['notes']}")
    return pdf.PrintedDocument(
        title="Invoice",
        number=invoice["invoice_number"],
        seller=domain.seller(),
        buyer_lines=await buyer_lines(rt, invoice["account_id"]),
        facts=facts,
        currency=currency,
        lines=printed_lines(rows, currency),
        payment_lines=payment,
        notes=notes,
    )


async def printed_credit_note(
    rt: Runtime, note: asyncpg.Record, rows: list[asyncpg.Record]
) -> pdf.PrintedDocument:
    invoice = await repository.get_invoice(rt.pool, note["invoice_id"])
    assert invoice is not None
    currency, tz = note["currency"], invoice["time_zone"]
    facts = [
        ("Credit note number", note["credit_note_number"]),
        ("Date", local_date(note["issued_at"], tz)),
        ("Credits invoice", invoice["invoice_number"]),
        ("Currency", currency),
        ("Reason", note["reason"]),
    ]
    refund = domain.round_money(note["refund_amount"], currency)
    if note["expected_settlement_date"] is not None:
        payment = [
            f"Refund of {currency} {refund} by {note['refund_method']}, expected by "
            f"{note['expected_settlement_date'].isoformat()}."
        ]
    else:
        payment = ["The invoice was not paid: it is cancelled and nothing is paid back."]
    return pdf.PrintedDocument(
        title="Credit note",
        number=note["credit_note_number"],
        seller=domain.seller(),
        buyer_lines=await buyer_lines(rt, note["account_id"]),
        facts=facts,
        currency=currency,
        lines=printed_lines(rows, currency),
        payment_lines=payment,
    )
