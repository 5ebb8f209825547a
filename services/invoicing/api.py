"""Invoicing's HTTP door: the buyer and payers read invoices (R8)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from shared import people
from shared.auth import verify_token
from shared.problems import not_found
from shared.runtime import as_json, runtime_of

from . import repository

router = APIRouter(prefix="/v1", tags=["invoicing"])
Authorization = Annotated[str | None, Header()]
INVOICE_READERS = {"buyer", "payer"}  # R8: admins who are not the buyer get 403


@router.get("/invoices/{invoice_id}")
async def get_invoice(
    invoice_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    invoice = await repository.get_invoice(rt.pool, invoice_id)
    if invoice is None:
        raise not_found("invoice")
    await people.require_role(rt.pool, who, invoice["account_id"], INVOICE_READERS, "invoice")
    lines = await repository.invoice_lines(rt.pool, invoice_id)
    return as_json({**dict(invoice), "lines": [dict(line) for line in lines]})  # type: ignore[no-any-return]


@router.get("/accounts/{account_id}/invoices")
async def list_invoices(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    await people.require_role(rt.pool, who, account_id, INVOICE_READERS, "account")
    invoices = await repository.list_invoices(rt.pool, account_id)
    return {"items": as_json([dict(i) for i in invoices])}
