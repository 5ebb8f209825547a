"""Issue 15: the signed link a mail carries opens the invoice's or credit note's PDF in a
browser, through invoicing's HTTP, without a bearer token; refused once expired (410) or
tampered with (403), and it opens that one document, nothing else."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pypdf import PdfReader

from shared.contracts import RefundApproved
from shared.signed_links import DocumentLinks, sign
from shared.time.clock import SystemClock
from tests.integration.test_invoicing_flows import (
    T0,
    Invoicing,
    envelope,
    invoicing,
    open_account,
    send,
    subscribed,
    wait_emitted,
)

pytestmark = pytest.mark.integration
__all__ = ["invoicing"]  # the module's fixture, shared


def links_of(inv: Invoicing) -> DocumentLinks:
    """The links as notifications makes them (one secret and lifetime for the platform)."""
    return DocumentLinks.of(inv.dep.settings("invoicing"))


def path_of(url: str) -> str:
    split = urlsplit(url)
    return f"{split.path}?{split.query}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def pdf_text(response: httpx.Response) -> str:
    pages = PdfReader(io.BytesIO(response.content)).pages
    return " ".join(p.extract_text() for p in pages).replace("\xa0", " ")


def problem(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.status_code, response.json()["type"].rsplit(":", 1)[-1]


async def test_issue15_a_signed_link_opens_the_invoice_pdf_without_a_token_until_it_expires(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv)
    await subscribed(inv, account, method="card")
    [issued] = await wait_emitted(inv, account, "InvoiceIssued")
    invoice = uuid.UUID(issued["invoice_id"])
    links = links_of(inv)
    now = SystemClock().now()
    url = links.url("invoice", invoice, now)
    assert url.startswith(f"{inv.dep.settings('invoicing').invoicing_public_url}/v1/")
    async with inv.http() as client:
        opened = await client.get(path_of(url))  # no Authorization header
        assert opened.status_code == 200, opened.text
        assert opened.headers["content-type"] == "application/pdf"
        assert opened.headers["cache-control"] == "private, no-store"
        assert issued["invoice_number"] in pdf_text(opened)

        # Expired: a genuine link signed 31 days ago (30-day lifetime) -> 410.
        old = links.url("invoice", invoice, now - timedelta(days=31))
        assert problem(await client.get(path_of(old))) == (410, "link-expired")

        # Tampered: the signature names another document, a later expiry, another kind.
        q = query_of(url)
        other = uuid.uuid4()
        tampered = [
            f"/v1/documents/invoice/{other}.pdf?expires={q['expires']}&signature={q['signature']}",
            f"/v1/documents/invoice/{invoice}.pdf?expires={int(q['expires']) + 86400}"
            f"&signature={q['signature']}",
            f"/v1/documents/credit-note/{invoice}.pdf?expires={q['expires']}"
            f"&signature={q['signature']}",
            f"/v1/documents/invoice/{invoice}.pdf?expires={q['expires']}&signature=x",
        ]
        for path in tampered:
            assert problem(await client.get(path)) == (403, "link-invalid"), path

        # Signed with the raw JWT secret (no domain-separation label): refused.
        raw = inv.dep.settings("invoicing").jwt_secret.get_secret_value().encode()
        expires = int((now + timedelta(days=1)).timestamp())
        forged = sign(raw, "invoice", invoice, expires)
        forged_path = f"/v1/documents/invoice/{invoice}.pdf?expires={expires}&signature={forged}"
        assert problem(await client.get(forged_path)) == (403, "link-invalid")

        # A genuine signature for a document that does not exist: 404, nothing else shown.
        missing = links.url("invoice", other, now)
        assert problem(await client.get(path_of(missing)))[0] == 404

        # Hostile input: a 422 problem naming the field.
        bad = await client.get(f"/v1/documents/receipt/{invoice}.pdf?expires=1&signature=x")
        assert problem(bad)[0] == 422 and "kind" in bad.text
        bad = await client.get(f"/v1/documents/invoice/{invoice}.pdf?expires=soon&signature=x")
        assert problem(bad)[0] == 422 and "expires" in bad.text
        bad = await client.get(f"/v1/documents/invoice/{invoice}.pdf")
        assert problem(bad)[0] == 422 and "signature" in bad.text


async def test_issue15_r39_a_signed_link_opens_the_credit_note_pdf(invoicing: Invoicing) -> None:
    inv = invoicing
    account = await open_account(inv)
    sub, _ = await subscribed(inv, account, method="card")
    approved_at = datetime(2026, 5, 29, 12, 0, tzinfo=UTC)
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=T0 - timedelta(days=365),
        reason="Bought by mistake",
        approved_at=approved_at,
    )
    body = envelope(refund, account.id, at=approved_at, subscription_id=sub)
    await send(inv, "ordering", account.id, body)
    [processed] = await wait_emitted(inv, account, "RefundProcessed")
    [note] = await wait_emitted(inv, account, "CreditNoteIssued")
    note_id = uuid.UUID(processed["credit_note_id"])
    links = links_of(inv)
    url = links.url("credit-note", note_id, SystemClock().now())
    async with inv.http() as client:
        opened = await client.get(path_of(url))
        assert opened.status_code == 200, opened.text
        assert note["credit_note_number"] in pdf_text(opened)
        as_invoice = url.replace("/credit-note/", "/invoice/")
        assert problem(await client.get(path_of(as_invoice))) == (403, "link-invalid")
