"""The payment center's use cases (issue 11) on invoicing's in-memory fakes: saved methods (R2),
the default, paying an invoice now, and a failed charge charged at once when a method is added
or chosen (R32, R33, R37)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from services.invoicing import domain, service
from services.invoicing.billing import RETRY_TIMER
from services.invoicing.payments import NewMethod, PayWith
from shared.contracts import RenewalPaymentMethodChanged
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from tests.unit.test_invoicing_service import NOW, World, renewal_due


@pytest.fixture
async def world() -> World:
    w = World()
    await w.opened()
    return w


async def declined_renewal(world: World) -> tuple[uuid.UUID, uuid.UUID]:
    """A card subscription whose renewal charge was declined (R37): (subscription, invoice)."""
    order = await world.ordered(payment_token="tok_decline")
    await service.invoice_renewal(world.uow, world.cause(order.subscription_id), renewal_due())
    failed = world.payloads("PaymentFailed")[-1]
    return order.subscription_id, uuid.UUID(failed["invoice_id"])


def renewal_count(world: World, subscription_id: uuid.UUID) -> int:
    return sum(
        1
        for i in world.repo.invoices.values()
        if i.subscription_id == subscription_id and i.purpose == "renewal"
    )


async def test_r2_the_buyer_saves_a_card_shown_by_its_label_the_first_is_the_default(
    world: World,
) -> None:
    buyer = world.actor(world.buyer)
    card = await service.add_payment_method(
        world.uow, buyer, world.account, NewMethod("card", "tok_success")
    )
    paypal = await service.add_payment_method(
        world.uow, buyer, world.account, NewMethod("paypal", "tok_success")
    )
    assert (card.label, card.is_default) == ("Visa **** 4242", True)
    assert (paypal.label, paypal.is_default) == ("PayPal sandbox-buyer@example.com", False)
    listed = await service.list_payment_methods(world.uow, buyer, world.account)
    assert [m.id for m in listed] == [card.id, paypal.id]
    added = world.payloads("PaymentMethodAdded")
    assert [a["label"] for a in added] == ["Visa **** 4242", "PayPal sandbox-buyer@example.com"]
    assert all("token" not in str(a) for a in added)  # the token never leaves invoicing


async def test_r2_a_token_the_gateway_does_not_know_is_refused_naming_the_field(
    world: World,
) -> None:
    with pytest.raises(Invalid) as refused:
        await service.add_payment_method(
            world.uow, world.actor(world.buyer), world.account, NewMethod("card", "tok_bogus")
        )
    assert refused.value.extensions["errors"][0]["field"] == "payment_token"
    assert not world.repo.methods


async def test_r8_admins_and_payers_get_403_strangers_404_for_payment_methods(
    world: World,
) -> None:
    for who in (world.admin, world.payer):
        with pytest.raises(Forbidden):
            await service.list_payment_methods(world.uow, world.actor(who), world.account)
    with pytest.raises(NotFound):
        await service.add_payment_method(
            world.uow, world.actor(), world.account, NewMethod("card", "tok_success")
        )


async def test_issue11_r32_adding_a_default_card_charges_the_declined_renewal_at_once(
    world: World,
) -> None:
    """R37 declined -> the buyer adds a card: the same renewal invoice is charged now (attempt 2),
    InvoicePaid (lifecycle's cue for Active, R32), no retry left, no second renewal invoice."""
    subscription_id, invoice_id = await declined_renewal(world)
    await service.add_payment_method(
        world.uow, world.actor(world.buyer), world.account, NewMethod("card", "tok_success")
    )
    invoice = world.repo.invoices[invoice_id]
    assert (invoice.status, invoice.payment_token) == ("paid", "tok_success")
    assert [a.attempt for a in await world.repo.charge_attempts(invoice_id)] == [1, 2]
    assert [p["invoice_id"] for p in world.payloads("InvoicePaid")][-1] == str(invoice_id)
    assert world.payloads("InvoicePaid")[-1]["purpose"] == "renewal"
    assert renewal_count(world, subscription_id) == 1
    assert (RETRY_TIMER, str(invoice_id)) not in world.repo.timers


async def test_issue11_r37_a_declining_new_card_keeps_the_retries_now_with_that_card(
    world: World,
) -> None:
    _, invoice_id = await declined_renewal(world)
    await service.add_payment_method(
        world.uow,
        world.actor(world.buyer),
        world.account,
        NewMethod("card", "tok_insufficient_funds"),
    )
    invoice = world.repo.invoices[invoice_id]
    assert (invoice.status, invoice.payment_token) == ("issued", "tok_insufficient_funds")
    assert world.payloads("PaymentFailed")[-1]["reason"] == "insufficient_funds"
    assert (RETRY_TIMER, str(invoice_id)) in world.repo.timers


async def test_issue11_a_method_not_made_default_charges_nothing_until_chosen(
    world: World,
) -> None:
    """A second card (not the default) leaves the failed charge alone; choosing it for the
    subscription (ordering's RenewalPaymentMethodChanged) charges it at once."""
    buyer = world.actor(world.buyer)
    await service.add_payment_method(
        world.uow, buyer, world.account, NewMethod("card", "tok_decline")
    )
    subscription_id, invoice_id = await declined_renewal(world)
    second = await service.add_payment_method(
        world.uow, buyer, world.account, NewMethod("card", "tok_success")
    )
    assert world.repo.invoices[invoice_id].status == "issued"
    changed = RenewalPaymentMethodChanged(
        payment_method="card", payment_method_id=second.id, changed_at=NOW
    )
    await service.renewal_method_changed(world.uow, world.cause(subscription_id), changed)
    assert world.repo.invoices[invoice_id].status == "paid"
    assert world.repo.subscriptions[subscription_id].payment_method_id == second.id
    assert renewal_count(world, subscription_id) == 1


async def test_issue11_the_next_renewal_is_charged_with_the_chosen_method(world: World) -> None:
    order = await world.ordered(payment_token="tok_decline")
    card = await service.add_payment_method(
        world.uow, world.actor(world.buyer), world.account, NewMethod("paypal", "tok_success")
    )
    changed = RenewalPaymentMethodChanged(
        payment_method="card", payment_method_id=card.id, changed_at=NOW
    )
    await service.renewal_method_changed(world.uow, world.cause(order.subscription_id), changed)
    await service.invoice_renewal(world.uow, world.cause(order.subscription_id), renewal_due())
    renewal = next(i for i in world.repo.invoices.values() if i.purpose == "renewal")
    assert (renewal.status, renewal.payment_method) == ("paid", "paypal")


async def test_r2_a_method_a_subscription_renews_with_is_not_removed(world: World) -> None:
    buyer = world.actor(world.buyer)
    await world.ordered(payment_token="tok_success")
    default = await service.add_payment_method(
        world.uow, buyer, world.account, NewMethod("card", "tok_success")
    )
    spare = await service.add_payment_method(
        world.uow, buyer, world.account, NewMethod("card", "tok_decline")
    )
    with pytest.raises(Conflict) as refused:
        await service.remove_payment_method(world.uow, buyer, default.id)
    assert refused.value.slug == "payment-method-in-use"
    removed = await service.remove_payment_method(world.uow, buyer, spare.id)
    assert removed.removed_at is not None
    assert [m.id for m in await service.list_payment_methods(world.uow, buyer, world.account)] == [
        default.id
    ]
    assert world.payloads("PaymentMethodRemoved")[0]["payment_method_id"] == str(spare.id)
    with pytest.raises(NotFound):
        await service.remove_payment_method(world.uow, world.actor(), default.id)


async def test_pay_an_open_invoice_now_with_a_one_off_token_as_a_payer(world: World) -> None:
    order = await world.ordered(payment_method="invoice")
    invoice = next(i for i in world.repo.invoices.values() if i.order_id == order.order_id)
    pay = PayWith("req-1", kind="card", token="tok_success")
    paid = await service.pay_invoice(world.uow, world.actor(world.payer), invoice.id, pay)
    assert (paid.method, world.repo.invoices[invoice.id].status) == ("card", "paid")
    assert world.payloads("InvoicePaid")[-1]["invoice_id"] == str(invoice.id)
    with pytest.raises(Conflict) as again:
        await service.pay_invoice(world.uow, world.actor(world.payer), invoice.id, pay)
    assert again.value.slug == "invoice-already-paid"


async def test_a_declined_payment_answers_402_and_stores_nothing_paid(world: World) -> None:
    order = await world.ordered(payment_method="invoice")
    invoice = next(i for i in world.repo.invoices.values() if i.order_id == order.order_id)
    with pytest.raises(domain.PaymentDeclined) as declined:
        await service.pay_invoice(
            world.uow,
            world.actor(world.buyer),
            invoice.id,
            PayWith("req-2", kind="card", token="tok_decline"),
        )
    assert (declined.value.status, declined.value.slug) == (402, "payment-declined")
    assert world.repo.invoices[invoice.id].status == "issued"
    assert not world.payloads("InvoicePaid") and not world.payloads("PaymentFailed")


async def test_r2_r8_a_payer_may_not_pay_with_the_buyers_saved_card_an_admin_not_at_all(
    world: World,
) -> None:
    card = await service.add_payment_method(
        world.uow, world.actor(world.buyer), world.account, NewMethod("card", "tok_success")
    )
    order = await world.ordered(payment_method="invoice")
    invoice = next(i for i in world.repo.invoices.values() if i.order_id == order.order_id)
    saved = PayWith("req-3", payment_method_id=card.id)
    with pytest.raises(Forbidden):
        await service.pay_invoice(world.uow, world.actor(world.payer), invoice.id, saved)
    with pytest.raises(Forbidden):
        await service.pay_invoice(world.uow, world.actor(world.admin), invoice.id, saved)
    with pytest.raises(NotFound):
        await service.pay_invoice(world.uow, world.actor(), invoice.id, saved)
    paid = await service.pay_invoice(world.uow, world.actor(world.buyer), invoice.id, saved)
    assert paid.method == "card"


async def test_r34_a_cancelled_subscription_is_not_charged_when_a_default_is_added(
    world: World,
) -> None:
    subscription_id, invoice_id = await declined_renewal(world)
    await service.stop_charging_cancelled(
        world.uow, world.cause(subscription_id), lapsed_unpaid=True
    )
    world.clock.advance(timedelta(days=1))
    await service.add_payment_method(
        world.uow, world.actor(world.buyer), world.account, NewMethod("card", "tok_success")
    )
    assert world.repo.invoices[invoice_id].status == "issued"
