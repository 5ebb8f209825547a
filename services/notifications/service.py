"""Notifications' use cases, one function each: keep who is who, plan and record the mails of an
event, hand a mail over to the SMTP server, read the mail log.

Queueing (``queue_mails``): a routed event causes one delivery per address (R12), chosen by the
routing table and the roles people hold (R9-R11) and rendered now (R13), in the same
transaction as the event's inbox row, so a redelivered event queues nothing. An event that
comes before what it is routed by waits (``shared.messaging.WaitForCause``): before the
account's people are known it waits for ``people:<account>`` (released by the next roles
snapshot); an activation waits for ``event:<its cause>`` (released when the order or trial
conversion is handled). Deciding to wait and releasing are serialised per account
(``lock_people``). Issue 17: an event's routing facts are read in one round trip and its
mails recorded in one, with the workers' wake-up.

Handing over (``deliver_due``, ``hand_over``): a batch is leased and marked ``handing_over``
in one committed statement; each mail then goes through MAIL FROM / RCPT TO and DATA, and is
recorded ``sent`` with ``EmailSent``; see ``delivery.py`` for the whole protocol, why no mail
is lost, and the one window in which a mail can arrive twice (always with the same
Message-ID). The mails of one lease are recorded ``sent`` together, in one transaction
(``record_sent``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from prometheus_client import Counter

from shared import tracing
from shared.auth import Principal
from shared.contracts import (
    AccountOpened,
    Contract,
    EmailFailed,
    EmailSent,
    Envelope,
    OrderPlaced,
    RolesChanged,
    SubscriptionActivated,
)
from shared.messaging import WaitForCause
from shared.signed_links import DocumentLinks
from shared.time.clock import Clock
from shared.unit_of_work import Work

from . import domain
from .mailer import (
    MailSender,
    PermanentFailure,
    TransientFailure,
    Unconfirmed,
    Unreachable,
    wire_mail,
)
from .repository import OUTAGE, DueMail, LoggedMail, Repository, RoutingFacts

log = logging.getLogger(__name__)

MAILS = Counter(
    "platform_mails_total",
    "Mails by outcome: sent (the server holds it), failed (refused for good), deferred (a 4xx or"
    " no connection: tried again later).",
    ["outcome"],
)
MAILS_POSSIBLY_DOUBLED = Counter(
    "platform_mails_possible_duplicates_total",
    "Mails handed over again although the server may already hold them (same Message-ID), by"
    " reason: unanswered_data (the connection broke during DATA), stopped_hand_over (a worker"
    " died or lost its database after the hand-over mark).",
    ["reason"],
)

UnitOfWork = Work[Repository]
Outcome = Literal["sent", "failed", "postponed", "unreachable", "resent", "skipped"]


@dataclass(frozen=True)
class RoutedEvent:
    """An event as notifications routes it: what happened, to which account, caused by what."""

    event_id: uuid.UUID
    event_type: str
    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    payload: Contract
    correlation_id: uuid.UUID | None = None

    @classmethod
    def of(cls, envelope: Envelope, payload: Contract) -> RoutedEvent:
        return cls(
            envelope.event_id,
            envelope.event_type,
            envelope.account_id,
            envelope.subscription_id,
            envelope.causation_id,
            payload,
            envelope.correlation_id,
        )


# --- who is who ------------------------------------------------------------------------------


async def remember_account(uow: UnitOfWork, account_id: uuid.UUID, opened: AccountOpened) -> None:
    """The account's name, language and time zone, for its mails (R13)."""
    await uow.repo.upsert_account(account_id, opened.name, opened.language, opened.time_zone)


@dataclass(frozen=True)
class Queued:
    """What queueing an event's mails did: how many deliveries it recorded, and which of the
    causes this event releases some event waits for (``None``: not read, release them all)."""

    recorded: int
    waiting: frozenset[str] | None = None


def released_by(event: RoutedEvent) -> tuple[str, str]:
    """The causes handling ``event`` releases (``handlers.release_waiting``)."""
    return domain.event_cause(event.event_id), domain.people_cause(event.account_id)


async def take_roles_snapshot(
    uow: UnitOfWork, event: RoutedEvent, *, links: DocumentLinks
) -> Queued:
    """The projection takes the snapshot; people who just became admins get a mail (R10).
    The caller then releases the events that waited for the account's people."""
    if not isinstance(event.payload, RolesChanged):
        raise TypeError(f"a roles snapshot, not {event.event_type}")
    # the people lock, held until commit (through the release), and who was who before
    facts = await uow.repo.routing_facts(
        event.account_id, subscription_id=event.subscription_id, waits_for=released_by(event)
    )
    members = await uow.repo.apply_roles(event.account_id, event.payload)
    if event.event_type not in domain.routing():
        return Queued(0, facts.waiting)
    return await _queue(uow, event, replace(facts, members=members), links, before=facts.members)


async def take_order(uow: UnitOfWork, event: RoutedEvent, *, links: DocumentLinks) -> Queued:
    """R9: the buyer gets an order confirmation carrying the order number; the product is
    remembered for later mails about the subscription."""
    if isinstance(event.payload, OrderPlaced):
        order = event.payload
        return await queue_mails(
            uow, event, links=links, remember=(order.subscription_id, order.offering)
        )
    return await queue_mails(uow, event, links=links)


async def take_activation(uow: UnitOfWork, event: RoutedEvent, *, links: DocumentLinks) -> Queued:
    """R10: the admins are told of the product access (once the order's roles are known)."""
    if isinstance(event.payload, SubscriptionActivated) and event.subscription_id is not None:
        remember = (event.subscription_id, event.payload.offering)
        return await queue_mails(uow, event, links=links, remember=remember)
    return await queue_mails(uow, event, links=links)


# --- mails of an event -----------------------------------------------------------------------


async def queue_mails(
    uow: UnitOfWork,
    event: RoutedEvent,
    *,
    links: DocumentLinks,
    remember: tuple[uuid.UUID, str] | None = None,
) -> Queued:
    """Plan the event's mails by the routing table and the roles (R9-R12), rendered now (R13),
    and record one delivery each; ``remember``: the offering of a subscription, remembered
    first for this and later mails. Raises ``WaitForCause`` when the event must wait for the
    account's people or for its cause. What routing needs is read in one round trip
    (``Repository.routing_facts``), the mails recorded in one (``add_deliveries``)."""
    if event.event_type not in domain.routing():
        if remember is not None:
            await uow.repo.remember_subscription(remember[0], event.account_id, remember[1])
        return Queued(0)
    cause = event.causation_id
    after_cause = cause is not None and domain.routed_after_cause(event.event_type, cause)
    facts = await uow.repo.routing_facts(
        event.account_id,
        subscription_id=remember[0] if remember else event.subscription_id,
        remember_offering=remember[1] if remember else None,
        cause=cause if after_cause else None,
        waits_for=released_by(event),
    )
    if after_cause and cause is not None and not facts.cause_consumed:
        raise WaitForCause(domain.event_cause(cause), f"{event.event_type} came before its cause")
    if not facts.members:
        raise WaitForCause(
            domain.people_cause(event.account_id), "the account's people are not known yet"
        )
    return await _queue(uow, event, facts, links)


async def _queue(
    uow: UnitOfWork,
    event: RoutedEvent,
    facts: RoutingFacts,
    links: DocumentLinks,
    before: Sequence[domain.Member] = (),
) -> Queued:
    # Delivery is infrastructure: due now in real time, whatever clock the account follows; so
    # is a link's expiry (a reader opens it in real time). The mail is dated by the account's
    # (business) clock, as the events it tells of are.
    now = await uow.time.now()
    planned = domain.plan_mails(
        event.event_type,
        event.payload,
        members=facts.members,
        before=before,
        account=facts.account,
        offering=facts.offering,
        links=links,
        now=now,
    )
    if not planned:
        return Queued(0, facts.waiting)
    recorded = await uow.repo.add_deliveries(
        event_id=event.event_id,
        event_type=event.event_type,
        account_id=event.account_id,
        mails=[(mail.recipient, mail.mail) for mail in planned],
        now=now,
        correlation_id=event.correlation_id,
        dated_at=await uow.time.now(event.account_id),
    )
    return Queued(recorded, facts.waiting)


# --- the mail log (R8) -----------------------------------------------------------------------


@dataclass(frozen=True)
class MailLogQuery:
    account_id: uuid.UUID
    status: str | None = None
    limit: int = 100
    before: datetime | None = None  # created_at of the last item seen


async def read_mail_log(uow: UnitOfWork, actor: Principal, query: MailLogQuery) -> list[LoggedMail]:
    """The delivery log, newest first, for the buyer and operators (R8): who got which mail,
    when, and what became of it."""
    roles: set[str] = set()
    if actor.kind == "user":
        roles = await uow.repo.roles_of(query.account_id, actor.subject)
    domain.require_mail_log_reader(actor.kind, roles)
    return await uow.repo.deliveries_of(query.account_id, query.status, query.limit, query.before)


# --- handing mails over to the SMTP server ---------------------------------------------------


@dataclass
class DeliveryDesk:
    """What the hand-over works with. ``steps`` commits each statement on its own (the
    protocol's marks must be durable before the next SMTP step); ``transaction`` opens a unit of
    work for a state change that emits an event; ``clock`` is real time."""

    steps: Repository
    transaction: Callable[[], AbstractAsyncContextManager[UnitOfWork]]
    clock: Clock
    mail_from: str
    smtp_timeout: float
    outage_pause: float = 0.2


async def deliver_due(desk: DeliveryDesk, sender: MailSender, limit: int) -> int:
    """Lease up to ``limit`` due mails, marked ``handing_over`` by the same statement, and hand
    them over in turn; returns how many were leased. When the server is unreachable the rest
    of the batch waits too."""
    now = desk.clock.now()
    token = uuid.uuid4()
    # The claim marks the batch ``handing_over``: a dead worker's mails go again after the
    # sweep's ``handover_deadline`` (counted as possible duplicates), whatever this lease says.
    lease = now + timedelta(seconds=60 + 2 * desk.smtp_timeout)
    due = await desk.steps.claim_due(now, token, lease, limit)
    batch = Lease(token, [mail.id for mail in due], now)
    accepted = Accepted()
    try:
        for index, mail in enumerate(due):
            if await hand_over(desk, sender, mail, batch, accepted) == "unreachable":
                rest = due[index + 1 :]
                if rest:
                    await postpone(desk, rest, token, "server unreachable")
                break
            if accepted.older_than(desk.clock.now() - timedelta(seconds=desk.smtp_timeout)):
                await record_sent(desk, accepted.take(), token)
    finally:
        await record_sent(desk, accepted.take(), token)
    return len(due)


@dataclass
class Lease:
    """A worker's batch, marked ``handing_over`` by its claim (one statement for the batch
    instead of one per mail before its DATA [ours, issue 17]: see ``delivery.py`` for what a
    crash then counts). The sweep hands a mark older than ``handover_deadline`` (six SMTP
    timeouts) over again, so a slow batch renews its mark once it is older than one timeout,
    checked before each mail's DATA; a mail whose mark the sweep took meanwhile is left to
    whoever holds it now."""

    token: uuid.UUID
    ids: list[uuid.UUID]
    marked_at: datetime
    lost: set[uuid.UUID] = field(default_factory=set)

    async def holds(self, desk: DeliveryDesk, mail: DueMail) -> bool:
        now = desk.clock.now()
        if now - self.marked_at > timedelta(seconds=desk.smtp_timeout):
            held = await desk.steps.renew_handing_over(self.ids, self.token, now)
            self.lost |= set(self.ids) - held
            self.ids = [i for i in self.ids if i in held]
            self.marked_at = now
        return mail.id not in self.lost


@dataclass
class Accepted:
    """Mails the server took (DATA answered 250) and not yet recorded ``sent``: one batch's,
    recorded together in one transaction (see ``delivery.py`` for the window this opens)."""

    mails: list[tuple[DueMail, str | None]] = field(default_factory=list)
    since: datetime | None = None

    def add(self, mail: DueMail, at: datetime) -> None:
        # the EmailSent goes on in the trace of this mail's hand-over
        self.mails.append((mail, tracing.current_traceparent()))
        self.since = self.since or at

    def older_than(self, moment: datetime) -> bool:
        return self.since is not None and self.since < moment

    def take(self) -> list[tuple[DueMail, str | None]]:
        mails, self.mails, self.since = self.mails, [], None
        return mails


async def hand_over(
    desk: DeliveryDesk,
    sender: MailSender,
    mail: DueMail,
    lease: Lease,
    accepted: Accepted | None = None,
) -> Outcome:
    """One mail of a marked batch to the SMTP server: envelope, then DATA. Any error
    between envelope and DATA resets the SMTP session before it propagates. A CLIENT span in
    the trace of the handler that queued the mail (the EmailSent it emits goes on in it).
    With ``accepted`` a mail the server took is added there for the caller to record (with
    the batch's others); without it, it is recorded at once."""
    with tracing.span(
        "notifications",
        "smtp send",
        kind=tracing.CLIENT,
        parent=mail.traceparent or "",
        attributes={"platform.delivery_id": str(mail.id), "platform.template": mail.template},
    ) as span:
        outcome = await _hand_over(desk, sender, mail, lease)
        span.set_attribute("platform.outcome", outcome)
        if outcome == "sent":
            batch = accepted if accepted is not None else Accepted()
            batch.add(mail, desk.clock.now())
            if accepted is None:
                await record_sent(desk, batch.take(), lease.token)
        return outcome


async def _hand_over(
    desk: DeliveryDesk, sender: MailSender, mail: DueMail, lease: Lease
) -> Outcome:
    token = lease.token
    try:
        message = wire_mail(
            sender=desk.mail_from,
            recipient=mail.recipient,
            subject=mail.subject,
            text=mail.body_text,
            html=mail.body_html,
            message_id=mail.message_id,
            date=mail.dated_at or desk.clock.now(),
        )
    except ValueError:  # not one plain address: refused, never sent
        await desk.steps.mark_failed(mail.id, token, "invalid header value", desk.clock.now())
        MAILS.labels("failed").inc()
        log.error("delivery %s refused: invalid header value", mail.id)
        return "failed"
    try:
        await sender.begin(desk.mail_from, mail.recipient)
    except PermanentFailure as error:
        log.info("delivery %s refused: %s", mail.id, error)
        await record_refusal(desk, mail, token, str(error))
        return "failed"
    except TransientFailure as error:
        log.info("delivery %s postponed: %s", mail.id, error)
        await postpone(desk, [mail], token, str(error))
        return "unreachable" if isinstance(error, Unreachable) else "postponed"

    try:
        held = await lease.holds(desk, mail)
    except BaseException:  # the database went away: no MAIL FROM may follow this one's open
        await sender.abort()
        raise
    if not held:
        await sender.abort()  # the sweep took the mark of this slow batch: not ours any more
        return "skipped"
    try:
        await sender.finish(message)
    except PermanentFailure as error:
        log.info("delivery %s refused: %s", mail.id, error)
        await record_refusal(desk, mail, token, str(error))
        return "failed"
    except TransientFailure as error:  # a pipelined envelope (``SmtpSender``) ends up here too
        log.info("delivery %s postponed: %s", mail.id, error)
        await postpone(desk, [mail], token, str(error))
        return "unreachable" if isinstance(error, Unreachable) else "postponed"
    except Unconfirmed as error:
        # The server may hold the mail: nothing may be lost, so it goes again (same Message-ID).
        log.warning("delivery %s unanswered, sent again later: %s", mail.id, error)
        MAILS_POSSIBLY_DOUBLED.labels("unanswered_data").inc()
        await postpone(desk, [mail], token, f"unanswered, sent again: {error}")
        return "resent"
    return "sent"  # recorded by the caller (``hand_over``, ``deliver_due``)


async def postpone(
    desk: DeliveryDesk, mails: Sequence[DueMail], token: uuid.UUID, error: str
) -> None:
    """Nothing was handed over (a 4xx or no connection): back to pending, with backoff."""
    now = desk.clock.now()
    retries = [now + domain.retry_delay(mail.attempts) for mail in mails]
    await desk.steps.postpone([mail.id for mail in mails], token, error, retries)
    MAILS.labels("deferred").inc(len(mails))


async def record_refusal(desk: DeliveryDesk, mail: DueMail, token: uuid.UUID, reason: str) -> None:
    """The server refused the mail for good (5xx): ``failed`` with ``EmailFailed``, never
    retried."""
    async with desk.transaction() as uow:
        if await uow.repo.mark_failed(mail.id, token, reason, await uow.time.now()):
            MAILS.labels("failed").inc()
            await uow.events.emit(
                EmailFailed(
                    delivery_id=mail.id,
                    source_event_id=mail.event_id,
                    recipient=mail.recipient,
                    reason=reason,
                    permanent=True,
                ),
                account_id=mail.account_id,
                causation=mail.cause(),
            )


async def record_sent(
    desk: DeliveryDesk, mails: Sequence[tuple[DueMail, str | None]], token: uuid.UUID
) -> None:
    """The server holds these mails: ``sent`` with an ``EmailSent`` each (in the trace of its
    hand-over), all in one transaction; retried while the database is away (until the
    hand-over deadline, after which the sweep hands the mails over again with their
    Message-IDs, possible duplicates, counted)."""
    if not mails:
        return
    pause = desk.outage_pause
    while True:
        try:
            async with desk.transaction() as uow:
                now = await uow.time.now()
                held = await uow.repo.mark_sent([mail.id for mail, _ in mails], token, now)
                # By account (each account's mails keep their order): the outbox's per-account
                # locks are then taken in the sorted order every multi-account transaction
                # uses (the consumer's batch transaction), so the two cannot deadlock on them.
                for mail, traceparent in sorted(mails, key=lambda m: str(m[0].account_id)):
                    if mail.id not in held:
                        continue
                    with tracing.continuing(traceparent):
                        await uow.events.emit(
                            EmailSent(
                                delivery_id=mail.id,
                                source_event_id=mail.event_id,
                                source_event_type=mail.event_type,
                                template=mail.template,
                                recipient=mail.recipient,
                                roles=list(mail.roles),
                                subject=mail.subject,
                            ),
                            account_id=mail.account_id,
                            causation=mail.cause(),
                        )
            MAILS.labels("sent").inc(len(held))
            return
        except OUTAGE as error:
            log.warning("%d deliveries sent, recording them failed: %r", len(mails), error)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
