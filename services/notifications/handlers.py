"""Notifications' Kafka entrance: each event becomes one service call in the transaction of its
inbox row (so a redelivered event queues nothing, R12), then releases what waited for it.

Waiting (``shared.messaging``): an event routed before the account's people are known waits for
``people:<account>``, released here by the next roles snapshot; an activation that came before
its order (another topic) waits for ``event:<order>``, released when that event is handled.
"""

from __future__ import annotations

from functools import cache

from shared.config import Settings
from shared.contracts import (
    AccountOpened,
    Contract,
    OrderPlaced,
    RolesChanged,
    SubscriptionActivated,
    payload_model,
)
from shared.messaging import EventConsumer, HandlerContext
from shared.signed_links import DocumentLinks
from shared.unit_of_work import Work

from . import domain, service
from .repository import CONSUMER, SqlRepository
from .service import RoutedEvent, UnitOfWork

consumer = EventConsumer(CONSUMER)


@cache
def _document_links() -> DocumentLinks:
    """Signed links to documents (issue 15): invoicing's public URL, the link key and lifetime,
    read from the process environment like the rest of the settings (PLATFORM_...)."""
    return DocumentLinks.of(Settings())


def unit_of_work(ctx: HandlerContext) -> UnitOfWork:
    """The handler's transaction; "now" without an account is real time (deliveries are due
    in real time whatever clock the account follows), the event's account's time is the
    consumer's reading of its clock (``Work.for_event``)."""
    return Work.for_event(SqlRepository(ctx.conn), ctx)


async def release_waiting(ctx: HandlerContext, queued: service.Queued | None = None) -> None:
    """This event is handled: what waited for it goes on. Once the account's people are known,
    anything still waiting for them goes on too (a wait that committed just after the snapshot's
    release is not left behind). ``queued.waiting`` names the causes some event waits for (read
    with the routing facts, under the account's turn, so no other transaction can add one
    before this commits): the others are not asked about (issue 17: two statements per event).
    Events released here may wait again, for the account's people too: so once any was, the
    people's cause is released whatever was read."""
    waiting = queued.waiting if queued is not None else None
    event_cause = domain.event_cause(ctx.envelope.event_id)
    people_cause = domain.people_cause(ctx.envelope.account_id)
    released = 0
    if waiting is None or event_cause in waiting:
        released = await ctx.release(event_cause)
    if waiting is None or people_cause in waiting or released:
        await ctx.release(people_cause)


@consumer.on(AccountOpened)
async def remember_account(ctx: HandlerContext, opened: AccountOpened) -> None:
    await service.remember_account(unit_of_work(ctx), ctx.envelope.account_id, opened)


@consumer.on(RolesChanged)
async def roles_changed(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    """R10: the projection takes the snapshot; new admins get a mail."""
    event = RoutedEvent.of(ctx.envelope, snapshot)
    queued = await service.take_roles_snapshot(unit_of_work(ctx), event, links=_document_links())
    await release_waiting(ctx, queued)


@consumer.on(OrderPlaced)
async def order_placed(ctx: HandlerContext, order: OrderPlaced) -> None:
    """R9: the buyer gets an order confirmation; its activation may be waiting."""
    event = RoutedEvent.of(ctx.envelope, order)
    queued = await service.take_order(unit_of_work(ctx), event, links=_document_links())
    await release_waiting(ctx, queued)


@consumer.on(SubscriptionActivated)
async def subscription_activated(ctx: HandlerContext, activated: SubscriptionActivated) -> None:
    event = RoutedEvent.of(ctx.envelope, activated)
    queued = await service.take_activation(unit_of_work(ctx), event, links=_document_links())
    await release_waiting(ctx, queued)


async def routed_mail(ctx: HandlerContext, payload: Contract) -> None:
    """Every other routed event type (TrialConverted, invoices, renewals, ...): the routing
    table decides."""
    event = RoutedEvent.of(ctx.envelope, payload)
    queued = await service.queue_mails(unit_of_work(ctx), event, links=_document_links())
    await release_waiting(ctx, queued)


for _event_type in domain.routing():
    if _event_type not in consumer.handlers:
        consumer.on(payload_model(_event_type, 1))(routed_mail)
