"""Invoicing's HTTP door: authenticate, call the service, answer its model.

Buyers and payers read their account's invoices and credit notes (R8: admins who are not the
buyer get 403, strangers 404), give an invoice a PO number, notes and a PO document until it
is paid (R22), and pay an open invoice now. The buyer keeps the account's saved card and PayPal
methods and the default (R2, the payment center). Operators record bank-transfer payments and
feed exchange rates (R19).
Every write takes an ``Idempotency-Key``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from shared.auth import Caller, Principal
from shared.db import Conn
from shared.guard import LIMIT_KEY
from shared.idempotency import run_keyed
from shared.problems import READ, WRITE, Problem, problem_responses
from shared.runtime import runtime_of
from shared.signed_links import DocumentKind, LinkRefused, key_from, verify

from . import domain, exchange_rates, pdf, printing, service, ubl
from .billing import UnitOfWork
from .commands import BankTransfer
from .domain import PurchaseOrder
from .gateway import GatewayUnavailable
from .models import MarketRate
from .payments import NewMethod, PayWith
from .repository import PostgresRepository
from .schemas import (
    AppliedRateOut,
    BankPayment,
    BankPaymentRecorded,
    CreditNoteDetail,
    CreditNotes,
    CreditNoteSummary,
    DefaultPaymentMethod,
    ExchangeRates,
    InvoiceDetail,
    InvoicePayment,
    InvoicePaymentRecorded,
    Invoices,
    InvoiceSummary,
    MarketRates,
    MarketRatesRecorded,
    NewPaymentMethod,
    PaymentMethodOut,
    PaymentMethods,
    PurchaseOrderChange,
    RatesRecomputed,
    Recompute,
    RenewalPurchaseOrder,
)

router = APIRouter(prefix="/v1", tags=["invoicing"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
MAX_PO_DOCUMENT_BYTES = 5 * 1024 * 1024
# A PO document travels base64-encoded in JSON: 4/3 of its size, plus the other fields.
WITH_PO_DOCUMENT = {LIMIT_KEY: MAX_PO_DOCUMENT_BYTES * 4 // 3 + 64 * 1024}
BINARY = {"type": "string", "format": "binary"}

PDF: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/pdf": {"schema": BINARY}},
        "description": "The PDF document",
    }
}
UBL_XML: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/xml": {"schema": {"type": "string"}}},
        "description": "The e-invoice: UBL 2.1 XML, EHF / Peppol BIS Billing 3.0",
    }
}
RATE_FEED = {LIMIT_KEY: 128 * 1024}  # up to 1,000 rates
CSV_BODY = {
    "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}},
    **RATE_FEED,
}


@contextlib.asynccontextmanager
async def reading(request: Request) -> AsyncIterator[UnitOfWork]:
    rt = runtime_of(request)
    async with rt.pool.acquire() as conn:
        yield UnitOfWork.on(PostgresRepository(conn), conn, rt.outbox, rt.clock)


async def once(
    request: Request,
    who: Principal,
    key: str | None,
    body: Any,
    status: int,
    write: Callable[[UnitOfWork], Awaitable[BaseModel]],
) -> JSONResponse:
    """Run ``write`` once per Idempotency-Key, in one transaction; a repeat gets the first
    answer."""
    rt = runtime_of(request)

    async def work(conn: Conn) -> tuple[int, dict[str, Any]]:
        uow = UnitOfWork.on(PostgresRepository(conn), conn, rt.outbox, rt.clock)
        return status, (await write(uow)).model_dump(mode="json")

    answered, answer = await run_keyed(
        rt.pool,
        scope=f"invoicing:{who.subject}",
        method=request.method,
        path=request.url.path,
        key=key,
        body=body,
        work=work,
    )
    return JSONResponse(answer, status_code=answered)


def purchase_order(change: PurchaseOrderChange) -> PurchaseOrder:
    """The change as PO details, its document decoded (at most 5 MiB)."""
    document = None
    if change.po_document is not None:
        try:
            document = base64.b64decode(change.po_document.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise Problem(
                422, "po-document-invalid", "PO document is not base64", "Send content_base64."
            ) from None
        if len(document) > MAX_PO_DOCUMENT_BYTES:
            raise Problem(
                413, "po-document-too-large", "PO document too large", "At most 5 MiB per document."
            )
    doc = change.po_document
    return PurchaseOrder(
        po_number=change.po_number,
        notes=change.notes,
        document=document,
        file_name=doc.file_name if doc else None,
        mime_type=doc.mime_type if doc else None,
    )


def seller_of(request: Request) -> printing.Seller:
    """The seller on every document: configuration (``PLATFORM_SELLER_*``)."""
    return printing.Seller.from_settings(runtime_of(request).settings)


def xml_answer(document: bytes, number: str) -> Response:
    return Response(
        document,
        media_type="application/xml",
        headers={"Content-Disposition": f'inline; filename="{number}.xml"'},
    )


def pdf_answer(document: pdf.PrintedDocument) -> Response:
    return Response(
        pdf.render(document),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{document.number}.pdf"'},
    )


# --- invoices ------------------------------------------------------------------------------------


@router.get(
    "/accounts/{account_id}/invoices",
    response_model=Invoices,
    responses=problem_responses(*READ),
    summary="List an account's invoices",
)
async def list_invoices(account_id: uuid.UUID, request: Request, who: Caller) -> Invoices:
    async with reading(request) as uow:
        invoices = await service.list_invoices(uow, who, account_id)
    return Invoices(items=[InvoiceSummary.of(i) for i in invoices])


@router.get(
    "/invoices/{invoice_id}.pdf",
    response_class=Response,
    responses={**PDF, **problem_responses(*READ)},
    summary="Download an invoice as PDF",
)
async def invoice_pdf(invoice_id: uuid.UUID, request: Request, who: Caller) -> Response:
    """R8: the account's buyer, admins and payers (404 for strangers)."""
    async with reading(request) as uow:
        return pdf_answer(await service.print_invoice(uow, who, invoice_id, seller_of(request)))


@router.get(
    "/invoices/{invoice_id}.xml",
    response_class=Response,
    responses={**UBL_XML, **problem_responses(*READ, 409)},
    summary="Download an invoice as an e-invoice (EHF / Peppol BIS Billing 3.0, UBL 2.1)",
)
async def invoice_xml(invoice_id: uuid.UUID, request: Request, who: Caller) -> Response:
    """Issue 15; R8 as the PDF."""
    async with reading(request) as uow:
        invoice, lines, party = await service.invoice_facts(uow, who, invoice_id)
    document = ubl.invoice_xml(invoice, lines, party, seller_of(request))
    return xml_answer(document, invoice.invoice_number)


@router.get(
    "/invoices/{invoice_id}",
    response_model=InvoiceDetail,
    responses=problem_responses(*READ),
    summary="Get an invoice with its lines",
)
async def get_invoice(invoice_id: uuid.UUID, request: Request, who: Caller) -> InvoiceDetail:
    async with reading(request) as uow:
        invoice, lines = await service.get_invoice(uow, who, invoice_id)
    return InvoiceDetail.with_lines(invoice, lines)


@router.patch(
    "/invoices/{invoice_id}",
    response_model=InvoiceSummary,
    responses=problem_responses(*WRITE),
    openapi_extra=WITH_PO_DOCUMENT,
    summary="Add a PO number, notes or a PO document to an unpaid invoice",
)
async def change_purchase_order(
    invoice_id: uuid.UUID,
    change: PurchaseOrderChange,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R22: PO number, notes and PO document, until the invoice is paid."""
    async with reading(request) as uow:  # who may change it is answered before the key
        await service.invoice_for(uow, who, invoice_id, domain.PO_EDITORS)
    given = set(change.model_fields_set)

    async def write(uow: UnitOfWork) -> InvoiceSummary:
        po = purchase_order(change)
        invoice = await service.change_purchase_order(uow, who, invoice_id, po, given)
        return InvoiceSummary.of(invoice)

    body = change.model_dump(mode="json", exclude_unset=True)
    return await once(request, who, idempotency_key, body, 200, write)


@router.get(
    "/invoices/{invoice_id}/po-document",
    response_class=Response,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "The purchase order document as uploaded",
        },
        **problem_responses(*READ),
    },
    summary="Download the PO document attached to an invoice",
)
async def purchase_order_document(invoice_id: uuid.UUID, request: Request, who: Caller) -> Response:
    async with reading(request) as uow:
        po = await service.purchase_order_document(uow, who, invoice_id)
    return Response(
        po.document,
        media_type=po.mime_type or "application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{po.file_name}"'},
    )


@router.put(
    "/subscriptions/{subscription_id}/renewal-purchase-order",
    response_model=RenewalPurchaseOrder,
    responses=problem_responses(*WRITE),
    openapi_extra=WITH_PO_DOCUMENT,
    summary="Give PO details for the coming renewal invoice",
)
async def set_renewal_purchase_order(
    subscription_id: uuid.UUID,
    change: PurchaseOrderChange,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R22: the PO details for the coming renewal invoice, given before the renewal date."""
    async with reading(request) as uow:
        await service.renewal_editable(uow, who, subscription_id)

    async def write(uow: UnitOfWork) -> RenewalPurchaseOrder:
        po = await service.set_renewal_purchase_order(
            uow, who, subscription_id, purchase_order(change)
        )
        return RenewalPurchaseOrder(
            subscription_id=subscription_id,
            po_number=po.po_number,
            notes=po.notes,
            po_file_name=po.file_name,
        )

    body = change.model_dump(mode="json")
    return await once(request, who, idempotency_key, body, 200, write)


@router.post(
    "/invoices/{invoice_id}/payments",
    status_code=201,
    response_model=InvoicePaymentRecorded,
    responses=problem_responses(402, 503, *WRITE),
    summary="Pay an open invoice now with a saved method or a one-off token",
)
async def pay_invoice(
    invoice_id: uuid.UUID,
    payment: InvoicePayment,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """The seed's "klikk på Betal": the buyer pays with a saved method or a one-off token, a
    payer with a one-off token. Declined: 402 ``payment-declined``, nothing paid; paid: 409."""
    async with reading(request) as uow:  # who may pay is answered before the key
        await service.invoice_for(uow, who, invoice_id, domain.INVOICE_PAYERS)
    pay = PayWith(
        request_ref=f"{who.subject}:{idempotency_key or uuid.uuid4()}",
        payment_method_id=payment.payment_method_id,
        kind=payment.type,
        token=payment.payment_token,
    )

    async def write(uow: UnitOfWork) -> InvoicePaymentRecorded:
        try:
            paid = await service.pay_invoice(uow, who, invoice_id, pay)
        except GatewayUnavailable:
            raise Problem(
                503, "gateway-unavailable", "Payment gateway unavailable", "Nothing was paid."
            ) from None
        return InvoicePaymentRecorded.of(paid)

    body = payment.model_dump(mode="json")
    return await once(request, who, idempotency_key, body, 201, write)


# --- the payment center: saved methods (R2) ------------------------------------------------------


@router.post(
    "/accounts/{account_id}/payment-methods",
    status_code=201,
    response_model=PaymentMethodOut,
    responses=problem_responses(*WRITE),
    summary="Save a card or PayPal method (a gateway token) for the account",
)
async def add_payment_method(
    account_id: uuid.UUID,
    new: NewPaymentMethod,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """R2: the buyer's. The first method, or one ``make_default``, is the default; a failed
    charge of a subscription that renews with the default is charged with it at once."""
    async with reading(request) as uow:
        await service.list_payment_methods(uow, who, account_id)
    method = NewMethod(new.type, new.payment_token, new.make_default)

    async def write(uow: UnitOfWork) -> PaymentMethodOut:
        return PaymentMethodOut.of(await service.add_payment_method(uow, who, account_id, method))

    body = new.model_dump(mode="json")
    return await once(request, who, idempotency_key, body, 201, write)


@router.get(
    "/accounts/{account_id}/payment-methods",
    response_model=PaymentMethods,
    responses=problem_responses(*READ),
    summary="List the account's saved payment methods",
)
async def list_payment_methods(
    account_id: uuid.UUID, request: Request, who: Caller
) -> PaymentMethods:
    async with reading(request) as uow:
        methods = await service.list_payment_methods(uow, who, account_id)
    return PaymentMethods(items=[PaymentMethodOut.of(m) for m in methods])


@router.put(
    "/accounts/{account_id}/default-payment-method",
    response_model=PaymentMethodOut,
    responses=problem_responses(*WRITE),
    summary="Make a saved payment method the account's default",
)
async def set_default_payment_method(
    account_id: uuid.UUID,
    default: DefaultPaymentMethod,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async with reading(request) as uow:
        await service.list_payment_methods(uow, who, account_id)
    method_id = default.payment_method_id

    async def write(uow: UnitOfWork) -> PaymentMethodOut:
        chosen = await service.set_default_payment_method(uow, who, account_id, method_id)
        return PaymentMethodOut.of(chosen)

    body = default.model_dump(mode="json")
    return await once(request, who, idempotency_key, body, 200, write)


@router.delete(
    "/payment-methods/{payment_method_id}",
    response_model=PaymentMethodOut,
    responses=problem_responses(*WRITE),
    summary="Remove a saved payment method no subscription renews with",
)
async def remove_payment_method(
    payment_method_id: uuid.UUID,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """[ours] refused (409 ``payment-method-in-use``) while a live subscription renews with it."""

    async def write(uow: UnitOfWork) -> PaymentMethodOut:
        removed = await service.remove_payment_method(uow, who, payment_method_id)
        return PaymentMethodOut.of(removed)

    return await once(request, who, idempotency_key, {}, 200, write)


# --- credit notes --------------------------------------------------------------------------------


@router.get(
    "/accounts/{account_id}/credit-notes",
    response_model=CreditNotes,
    responses=problem_responses(*READ),
    summary="List an account's credit notes",
)
async def list_credit_notes(account_id: uuid.UUID, request: Request, who: Caller) -> CreditNotes:
    async with reading(request) as uow:
        notes = await service.list_credit_notes(uow, who, account_id)
    return CreditNotes(items=[CreditNoteSummary.of(n) for n in notes])


@router.get(
    "/credit-notes/{credit_note_id}.pdf",
    response_class=Response,
    responses={**PDF, **problem_responses(*READ)},
    summary="Download a credit note as PDF",
)
async def credit_note_pdf(credit_note_id: uuid.UUID, request: Request, who: Caller) -> Response:
    """R8: as its invoice."""
    async with reading(request) as uow:
        return pdf_answer(
            await service.print_credit_note(uow, who, credit_note_id, seller_of(request))
        )


@router.get(
    "/credit-notes/{credit_note_id}.xml",
    response_class=Response,
    responses={**UBL_XML, **problem_responses(*READ, 409)},
    summary="Download a credit note as an e-invoice (EHF / Peppol BIS Billing 3.0, UBL 2.1)",
)
async def credit_note_xml(credit_note_id: uuid.UUID, request: Request, who: Caller) -> Response:
    """Issue 15; R8 as the PDF."""
    async with reading(request) as uow:
        note, invoice, lines, party = await service.credit_note_facts(uow, who, credit_note_id)
    document = ubl.credit_note_xml(note, invoice, lines, party, seller_of(request))
    return xml_answer(document, note.credit_note_number)


@router.get(
    "/credit-notes/{credit_note_id}",
    response_model=CreditNoteDetail,
    responses=problem_responses(*READ),
    summary="Get a credit note with its lines",
)
async def get_credit_note(
    credit_note_id: uuid.UUID, request: Request, who: Caller
) -> CreditNoteDetail:
    async with reading(request) as uow:
        note, lines = await service.get_credit_note(uow, who, credit_note_id)
    return CreditNoteDetail.with_lines(note, lines)


# --- signed links (issue 15) ----------------------------------------------------------------------


@router.get(
    "/documents/{kind}/{document_id}.pdf",
    response_class=Response,
    responses={**PDF, **problem_responses(403, 404, 410, 422)},
    summary="Open an invoice or credit note PDF through a signed link from a mail",
)
async def linked_document(
    kind: DocumentKind,
    document_id: uuid.UUID,
    request: Request,
    expires: Annotated[int, Query(ge=0, le=2**40, description="Unix seconds")],
    signature: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    """No bearer token: the signature (HMAC over kind, id and expiry, shared/signed_links.py)
    opens this one document until it expires (410), and nothing if tampered with (403)."""
    rt = runtime_of(request)
    try:
        verify(key_from(rt.settings), kind, document_id, expires, signature, rt.clock.now())
    except LinkRefused as refused:
        if refused.reason == "expired":
            raise Problem(
                410,
                "link-expired",
                "The link has expired",
                "Sign in to download the document, or use the link in a newer mail.",
            ) from None
        raise Problem(
            403, "link-invalid", "The link is not valid", "Use the link as mailed."
        ) from None
    async with reading(request) as uow:
        document = await service.print_linked_document(uow, kind, document_id, seller_of(request))
    answer = pdf_answer(document)
    answer.headers["Cache-Control"] = "private, no-store"
    answer.headers["Referrer-Policy"] = "no-referrer"
    return answer


# --- operators -----------------------------------------------------------------------------------


@router.post(
    "/operator/invoices/{invoice_id}/bank-payments",
    status_code=201,
    response_model=BankPaymentRecorded,
    responses=problem_responses(*WRITE),
    summary="Record a bank transfer that pays an invoice",
)
async def record_bank_payment(
    invoice_id: uuid.UUID,
    payment: BankPayment,
    request: Request,
    who: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """A bank transfer received for an invoice: PaymentSucceeded and InvoicePaid."""
    domain.require_operator(who.kind)
    transfer = BankTransfer(payment.amount, payment.reference, payment.paid_at)

    async def write(uow: UnitOfWork) -> BankPaymentRecorded:
        paid = await service.pay_by_bank_transfer(uow, who, invoice_id, transfer)
        return BankPaymentRecorded.of(paid)

    body = payment.model_dump(mode="json")
    return await once(request, who, idempotency_key, body, 201, write)


async def store_market_rates(
    request: Request, who: Principal, key: str | None, rates: list[MarketRate], source: str
) -> JSONResponse:
    async def write(uow: UnitOfWork) -> MarketRatesRecorded:
        recorded = await service.record_market_rates(uow, who, rates, source)
        return MarketRatesRecorded(recorded=recorded, source=source)

    body = [[r.currency, str(r.rate), r.as_of.isoformat()] for r in rates]
    return await once(request, who, key, body, 201, write)


@router.post(
    "/operator/exchange-rates/market",
    status_code=201,
    response_model=MarketRatesRecorded,
    responses=problem_responses(*WRITE),
    openapi_extra=RATE_FEED,
    summary="Feed market exchange rates",
)
async def record_market_rates(
    rates: MarketRates, request: Request, who: Caller, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """R19: market rates from the base currency (USD), as fed by an operator."""
    domain.require_operator(who.kind)
    fed = [
        MarketRate(exchange_rates.known_currency(r.currency), r.rate, r.as_of) for r in rates.rates
    ]
    return await store_market_rates(request, who, idempotency_key, fed, "api")


@router.post(
    "/operator/exchange-rates/market.csv",
    status_code=201,
    response_model=MarketRatesRecorded,
    responses=problem_responses(*WRITE),
    summary="Feed market exchange rates as CSV (currency,rate,as_of)",
    openapi_extra=CSV_BODY,
)
async def import_market_rates_csv(
    request: Request, who: Caller, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """R19: a CSV of market rates: a header ``currency,rate,as_of`` then one rate a line."""
    domain.require_operator(who.kind)
    text = (await request.body()).decode("utf-8-sig", errors="replace")
    fed = exchange_rates.market_rates_from_csv(text)
    return await store_market_rates(request, who, idempotency_key, fed, "csv")


@router.post(
    "/operator/exchange-rates/recompute",
    response_model=RatesRecomputed,
    responses=problem_responses(*WRITE),
    summary="Recompute a quarter's applied exchange rates now",
)
async def recompute_rates(
    recompute: Recompute, request: Request, who: Caller, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """R19: compute a quarter's applied rates now (the quarterly timer does the same)."""
    domain.require_operator(who.kind)
    quarter = exchange_rates.require_quarter_start(recompute.quarter_start)

    async def write(uow: UnitOfWork) -> RatesRecomputed:
        added = await service.recompute_rates(uow, who, quarter)
        return RatesRecomputed(quarter_start=quarter, rates_added=added)

    body = recompute.model_dump(mode="json")
    return await once(request, who, idempotency_key, body, 200, write)


@router.get(
    "/operator/exchange-rates",
    response_model=ExchangeRates,
    responses=problem_responses(*READ),
    summary="Applied exchange rates with their history",
)
async def exchange_rate_history(
    request: Request,
    who: Caller,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    channel: Annotated[str | None, Query(pattern="^(direct|partner)$")] = None,
) -> ExchangeRates:
    """R19: the applied rates with their history, and the initial rates they started from."""
    async with reading(request) as uow:
        history = await service.exchange_rate_history(uow, who, currency, channel)
    return ExchangeRates(
        base_currency=domain.price_book()["base_currency"],
        initial_rates=domain.price_book()["initial_rates_from_base"],
        history=[AppliedRateOut.of(r) for r in history],
    )
