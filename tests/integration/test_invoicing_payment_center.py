"""Invoicing's payment center over HTTP on the real PostgreSQL and Kafka (issue 11): saved
methods (R2, R8), paying an open invoice now, hostile tokens refused as 4xx problems."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.test_invoicing_flows import (
    Account,
    Invoicing,
    emitted,
    invoicing,
    open_account,
    subscribed,
    wait_emitted,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration
__all__ = ["invoicing"]  # the module's deployment, shared with the invoicing flows


async def roles_known(inv: Invoicing, account: Account) -> None:
    """Invoicing has applied the account's RolesChanged (sent through Kafka by open_account)."""

    async def buyer_reads() -> bool:
        async with inv.http() as client:
            answer = await client.get(
                f"/v1/accounts/{account.id}/payment-methods",
                headers=inv.token(account.buyer.user_id),
            )
        return answer.status_code == 200

    await wait_for(buyer_reads, timeout=30, what="invoicing to know the account's roles")


def keyed(headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or str(uuid.uuid4())}


async def test_r8_r2_payment_methods_are_the_buyers_admins_and_payers_403_strangers_404(
    invoicing: Invoicing,
) -> None:
    inv = invoicing
    account = await open_account(inv, payers=1)
    await roles_known(inv, account)
    path = f"/v1/accounts/{account.id}/payment-methods"
    card = {"type": "card", "payment_token": "tok_success"}
    async with inv.http() as client:
        added = await client.post(path, json=card, headers=keyed(inv.token(account.buyer.user_id)))
        assert added.status_code == 201, added.text
        assert (added.json()["label"], added.json()["is_default"]) == ("Visa **** 4242", True)
        assert "tok_success" not in added.text  # the token is never shown
        for who, status in (
            (account.admin.user_id, 403),
            (account.payers[0].user_id, 403),
            (account.stranger, 404),
        ):
            listed = await client.get(path, headers=inv.token(who))
            posted = await client.post(path, json=card, headers=keyed(inv.token(who)))
            removed = await client.delete(
                f"/v1/payment-methods/{added.json()['id']}", headers=keyed(inv.token(who))
            )
            assert (listed.status_code, posted.status_code, removed.status_code) == (
                status,
                status,
                status,
            )
            assert posted.headers["content-type"] == "application/problem+json"
        listed = await client.get(path, headers=inv.token(account.buyer.user_id))
        assert [m["id"] for m in listed.json()["items"]] == [added.json()["id"]]
    [event] = await wait_emitted(inv, account, "PaymentMethodAdded")
    assert event["payment_method_id"] == added.json()["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "card", "payment_token": "4242424242424242"}, "payment_token"),  # a PAN
        ({"type": "card", "payment_token": "tok_stolen"}, "payment_token"),  # unknown
        ({"type": "card", "payment_token": "tok_success\u202e"}, "payment_token"),
        ({"type": "card", "payment_token": "x" * 201}, "payment_token"),
        ({"type": "invoice", "payment_token": "tok_success"}, "type"),
        ({"type": "card", "payment_token": "tok_success", "pan": "1"}, "pan"),
    ],
)
async def test_hostile_tokens_are_refused_with_a_problem_naming_the_field(
    invoicing: Invoicing, body: dict[str, str], field: str
) -> None:
    inv = invoicing
    account = await open_account(inv)
    await roles_known(inv, account)
    async with inv.http() as client:
        refused = await client.post(
            f"/v1/accounts/{account.id}/payment-methods",
            json=body,
            headers=keyed(inv.token(account.buyer.user_id)),
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert field in [e["field"].split(".")[-1] for e in refused.json()["errors"]]
        listed = await client.get(
            f"/v1/accounts/{account.id}/payment-methods", headers=inv.token(account.buyer.user_id)
        )
        assert listed.json()["items"] == []


async def test_a_payer_pays_an_open_invoice_declined_402_then_paid_once_then_409(
    invoicing: Invoicing,
) -> None:
    """The seed's "klikk på Betal": a declined charge answers 402 and stores nothing paid; a
    repeat of the paying request answers the same payment; paying again answers 409."""
    inv = invoicing
    account = await open_account(inv, payers=1)
    _, placed = await subscribed(inv, account, method="invoice", channel="partner")
    [issued] = await wait_emitted(inv, account, "InvoiceIssued", order_id=str(placed.order_id))
    path = f"/v1/invoices/{issued['invoice_id']}/payments"
    payer = inv.token(account.payers[0].user_id)
    async with inv.http() as client:
        for who, status in ((account.admin.user_id, 403), (account.stranger, 404)):
            denied = await client.post(
                path,
                json={"type": "card", "payment_token": "tok_success"},
                headers=keyed(inv.token(who)),
            )
            assert denied.status_code == status
        declined = await client.post(
            path, json={"type": "card", "payment_token": "tok_decline"}, headers=keyed(payer)
        )
        assert declined.status_code == 402, declined.text
        assert declined.json()["type"].endswith(":payment-declined")
        invoice = await client.get(f"/v1/invoices/{issued['invoice_id']}", headers=payer)
        assert invoice.json()["status"] == "issued"
        saved = await client.post(
            path,
            json={"payment_method_id": str(uuid.uuid4())},
            headers=keyed(payer),
        )
        assert saved.status_code == 403  # R2: saved methods are the buyer's
        key = str(uuid.uuid4())
        body = {"type": "paypal", "payment_token": "tok_success"}
        paid = await client.post(path, json=body, headers=keyed(payer, key))
        again = await client.post(path, json=body, headers=keyed(payer, key))
        assert (paid.status_code, again.status_code) == (201, 201), paid.text
        assert paid.json() == again.json()
        assert paid.json()["method"] == "paypal"
        twice = await client.post(path, json=body, headers=keyed(payer))
        assert twice.status_code == 409
        assert twice.json()["type"].endswith(":invoice-already-paid")
    paid_events = await wait_emitted(inv, account, "InvoicePaid", invoice_id=issued["invoice_id"])
    assert len(paid_events) == 1
    assert not await emitted(inv, account, "PaymentFailed")  # a declined "pay now" stores nothing
