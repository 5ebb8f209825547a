"""Notifications' use cases through ``service.py`` over in-memory fakes (no database, no broker,
no SMTP server): planning and recording the mails of an event (R9-R13), waiting for a cause,
the mail log's access rule (R8) and the SMTP hand-over (R12)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from services.notifications import domain, service
from services.notifications.domain import Account, Member, Recipient, RenderedMail
from services.notifications.mailer import (
    OutgoingMail,
    PermanentFailure,
    TransientFailure,
    Unconfirmed,
    Unreachable,
)
from services.notifications.repository import DueMail, LoggedMail, RoutingFacts
from services.notifications.service import DeliveryDesk, RoutedEvent, UnitOfWork
from shared.auth import Principal
from shared.contracts import (
    Contract,
    EmailFailed,
    EmailSent,
    RolesChanged,
    SubscriptionActivated,
)
from shared.errors import Forbidden, NotFound
from shared.messaging import WaitForCause
from shared.people import roles_by_person
from shared.time.clock import FrozenClock
from shared.unit_of_work import FixedTime, RecordedEvents, Work
from tests.notifications_samples import AT, LINKS, order_placed, person, samples

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Delivery:
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    account_id: uuid.UUID
    recipient: Recipient
    mail: RenderedMail
    created_at: datetime
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime = NOW
    last_error: str | None = None
    claim_token: uuid.UUID | None = None
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    dated_at: datetime | None = None


@dataclass
class FakeRepository:
    """An in-memory ``Repository``: the same answers as the SQL one for what the tests use."""

    accounts: dict[uuid.UUID, Account] = field(default_factory=dict)
    offerings: dict[uuid.UUID, str] = field(default_factory=dict)
    people: dict[uuid.UUID, dict[uuid.UUID, Member]] = field(default_factory=dict)
    inbox: set[uuid.UUID] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    locked: list[uuid.UUID] = field(default_factory=list)
    wakes: int = 0
    sent_records: list[int] = field(default_factory=list)  # mails per mark_sent call
    renewals: int = 0  # renew_handing_over calls

    async def upsert_account(
        self, account_id: uuid.UUID, name: str, language: str, time_zone: str
    ) -> None:
        self.accounts[account_id] = Account(name, language, time_zone)

    async def account(self, account_id: uuid.UUID) -> Account | None:
        return self.accounts.get(account_id)

    async def remember_subscription(
        self, subscription_id: uuid.UUID, account_id: uuid.UUID, offering: str
    ) -> None:
        self.offerings[subscription_id] = offering

    async def offering_of(self, subscription_id: uuid.UUID | None) -> str | None:
        return self.offerings.get(subscription_id) if subscription_id else None

    async def members(self, account_id: uuid.UUID) -> list[Member]:
        found = self.people.get(account_id, {}).values()
        return sorted(found, key=lambda m: m.email)

    async def apply_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> list[Member]:
        self.people[account_id] = {
            uid: Member(p.email, p.name, p.language, frozenset(roles))
            for uid, (p, roles) in roles_by_person(snapshot).items()
        }
        return await self.members(account_id)

    async def routing_facts(
        self,
        account_id: uuid.UUID,
        *,
        subscription_id: uuid.UUID | None = None,
        remember_offering: str | None = None,
        cause: uuid.UUID | None = None,
        waits_for: Sequence[str] = (),
    ) -> RoutingFacts:
        await self.lock_people(account_id)
        if subscription_id is not None and remember_offering is not None:
            await self.remember_subscription(subscription_id, account_id, remember_offering)
        return RoutingFacts(
            members=await self.members(account_id),
            account=await self.account(account_id),
            offering=await self.offering_of(subscription_id),
            cause_consumed=cause is not None and await self.consumed(cause),
            waiting=frozenset(),
        )

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        member = self.people.get(account_id, {}).get(user_id)
        return set(member.roles) if member else set()

    async def lock_people(self, account_id: uuid.UUID) -> None:
        self.locked.append(account_id)

    async def consumed(self, event_id: uuid.UUID) -> bool:
        return event_id in self.inbox

    async def add_delivery(
        self,
        *,
        event_id: uuid.UUID,
        event_type: str,
        account_id: uuid.UUID,
        recipient: Recipient,
        mail: RenderedMail,
        now: datetime,
        correlation_id: uuid.UUID | None = None,
        dated_at: datetime | None = None,
    ) -> bool:
        address = recipient.email.lower()
        if any(d.event_id == event_id and d.recipient.email == address for d in self.deliveries):
            return False
        self.deliveries.append(
            Delivery(
                uuid.uuid4(),
                event_id,
                event_type,
                account_id,
                replace(recipient, email=address),
                mail,
                now,
                next_attempt_at=now,
                dated_at=dated_at or now,
            )
        )
        return True

    async def add_deliveries(
        self,
        *,
        event_id: uuid.UUID,
        event_type: str,
        account_id: uuid.UUID,
        mails: Sequence[tuple[Recipient, RenderedMail]],
        now: datetime,
        correlation_id: uuid.UUID | None = None,
        dated_at: datetime | None = None,
    ) -> int:
        recorded = 0
        for recipient, mail in mails:
            recorded += await self.add_delivery(
                event_id=event_id,
                event_type=event_type,
                account_id=account_id,
                recipient=recipient,
                mail=mail,
                now=now,
                correlation_id=correlation_id,
                dated_at=dated_at,
            )
        await self.wake_delivery_workers()
        return recorded

    async def wake_delivery_workers(self) -> None:
        self.wakes += 1

    async def deliveries_of(
        self, account_id: uuid.UUID, status: str | None, limit: int, before: datetime | None
    ) -> list[LoggedMail]:
        rows = [
            d
            for d in self.deliveries
            if d.account_id == account_id
            and (status is None or d.status == status)
            and (before is None or d.created_at < before)
        ]
        rows.sort(key=lambda d: (-d.created_at.timestamp(), d.recipient.email))
        return [
            LoggedMail(
                d.id,
                d.event_id,
                d.event_type,
                d.recipient.email,
                d.recipient.roles,
                d.recipient.template,
                d.recipient.language,
                d.mail.subject,
                d.status,
                d.attempts,
                d.last_error,
                d.next_attempt_at,
                d.created_at,
                d.sent_at,
                d.failed_at,
            )
            for d in rows[:limit]
        ]

    def _held(self, delivery_id: uuid.UUID, token: uuid.UUID) -> Delivery | None:
        for d in self.deliveries:
            if d.id == delivery_id and d.claim_token == token:
                return d
        return None

    async def claim_due(
        self, now: datetime, token: uuid.UUID, lease_until: datetime, limit: int
    ) -> list[DueMail]:
        due = [d for d in self.deliveries if d.status == "pending" and d.next_attempt_at <= now]
        for d in due[:limit]:  # leased and marked ``handing_over`` in one statement
            d.claim_token, d.status, d.attempts = token, "handing_over", d.attempts + 1
        return [
            DueMail(
                d.id,
                d.event_id,
                d.event_type,
                d.account_id,
                d.recipient.email,
                d.recipient.roles,
                d.recipient.template,
                d.mail.subject,
                d.mail.text,
                d.mail.html,
                d.attempts - 1,
                f"<{d.id}@subscription-platform>",
                dated_at=d.dated_at,
            )
            for d in due[:limit]
        ]

    async def renew_handing_over(
        self, delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]:
        self.renewals += 1
        held = [d for i in delivery_ids if (d := self._held(i, token)) is not None]
        return {d.id for d in held if d.status == "handing_over"}

    async def mark_sent(
        self, delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]:
        self.sent_records.append(len(delivery_ids))
        held = [d for i in delivery_ids if (d := self._held(i, token)) is not None]
        for d in held:
            d.status, d.sent_at, d.claim_token = "sent", now, None
        return {d.id for d in held}

    async def mark_failed(
        self, delivery_id: uuid.UUID, token: uuid.UUID, error: str, now: datetime
    ) -> bool:
        d = self._held(delivery_id, token)
        if d is None:
            return False
        d.attempts += 1 if d.status == "pending" else 0
        d.status, d.last_error, d.failed_at, d.claim_token = "failed", error, now, None
        return True

    async def postpone(
        self,
        delivery_ids: list[uuid.UUID],
        token: uuid.UUID,
        error: str,
        next_attempt_at: list[datetime],
    ) -> None:
        for delivery_id, at in zip(delivery_ids, next_attempt_at, strict=True):
            d = self._held(delivery_id, token)
            if d is not None:
                d.attempts += 1 if d.status == "pending" else 0
                d.status, d.last_error, d.next_attempt_at, d.claim_token = (
                    "pending",
                    error,
                    at,
                    None,
                )

    async def expire_handovers(self, older_than: datetime) -> int:
        return 0


@dataclass
class Platform:
    """One account's world: the fake repository, the recorded events, time standing still."""

    repo: FakeRepository = field(default_factory=FakeRepository)
    clock: FrozenClock = field(default_factory=lambda: FrozenClock(NOW))
    events: RecordedEvents = field(init=False)
    account_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        self.events = RecordedEvents("notifications", self.clock)

    def uow(self) -> UnitOfWork:
        return Work(self.repo, self.events, FixedTime(self.clock))

    def event(self, payload: Contract, causation_id: uuid.UUID | None = None) -> RoutedEvent:
        event = RoutedEvent(
            uuid.uuid4(),
            type(payload).__name__,
            self.account_id,
            getattr(payload, "subscription_id", None),
            causation_id,
            payload,
        )
        self.repo.inbox.add(event.event_id)  # consumed (the inbox row is this transaction's)
        return event

    async def handle(self, payload: Contract, causation_id: uuid.UUID | None = None) -> int:
        event = self.event(payload, causation_id)
        if isinstance(payload, RolesChanged):
            return (await service.take_roles_snapshot(self.uow(), event, links=LINKS)).recorded
        return (await service.queue_mails(self.uow(), event, links=LINKS)).recorded

    def mails(self) -> list[tuple[str, str]]:
        return sorted((d.recipient.template, d.recipient.email) for d in self.repo.deliveries)

    def desk(self) -> DeliveryDesk:
        @asynccontextmanager
        async def transaction() -> AsyncIterator[UnitOfWork]:
            yield self.uow()

        return DeliveryDesk(
            steps=self.repo,
            transaction=transaction,
            clock=self.clock,
            mail_from="billing@example.com",
            smtp_timeout=10.0,
        )


KARI, OLA, PER = "kari@example.com", "ola@example.com", "per@example.com"


def roles(*, admins: tuple[str, ...] = (), payers: tuple[str, ...] = ()) -> RolesChanged:
    buyer = person(KARI)
    return RolesChanged(
        buyer=buyer,
        primary_admin=buyer,
        secondary_admins=[person(a, a.split("@")[0], "en") for a in admins],
        payers=[person(p, p.split("@")[0], "en") for p in payers],
    )


async def opened(world: Platform, snapshot: RolesChanged | None = None) -> Platform:
    await world.repo.upsert_account(world.account_id, "Fjord Arkitekter AS", "nb", "Europe/Oslo")
    await world.handle(snapshot or roles())
    world.repo.deliveries.clear()
    world.repo.wakes = 0
    return world


# --- planning and recording the mails of an event --------------------------------------------


async def test_r9_an_order_confirmation_reaches_the_buyer_once_and_names_the_order() -> None:
    """R9, R12: one delivery for the buyer; the same event again records nothing; R13: in the
    buyer's language."""
    world = await opened(Platform())
    order = order_placed("ORD-42", KARI)
    event = world.event(order)

    assert (await service.take_order(world.uow(), event, links=LINKS)).recorded == 1
    assert (await service.take_order(world.uow(), event, links=LINKS)).recorded == 0

    [delivery] = world.repo.deliveries
    assert (delivery.recipient.email, delivery.recipient.template) == (KARI, "order_confirmation")
    assert delivery.mail.subject == "Ordrebekreftelse ORD-42"
    assert delivery.created_at == NOW and world.repo.wakes == 2
    assert world.repo.offerings == {order.subscription_id: "autocad"}


async def test_r10_a_roles_snapshot_mails_only_who_newly_holds_an_admin_role() -> None:
    """R10: the first snapshot appoints the buyer; adding Ola mails Ola only; the same snapshot
    again mails nobody."""
    world = Platform()
    first = roles()
    assert await world.handle(first) == 1
    assert world.mails() == [("admin_appointed", KARI)]

    second = first.model_copy(update={"secondary_admins": [person(OLA, "Ola", "en")]})
    assert await world.handle(second) == 1
    assert await world.handle(second) == 0
    assert world.mails() == [("admin_appointed", KARI), ("admin_appointed", OLA)]
    assert world.repo.locked and set(world.repo.locked) == {world.account_id}


async def test_r11_every_address_on_an_invoice_receives_it_and_admins_do_not() -> None:
    """R11: the account's payers and the invoice's printed addresses get the invoice; an admin
    who is neither buyer nor payer gets nothing (R10); one mail per address (R12)."""
    world = await opened(Platform(), roles(admins=(OLA,), payers=(PER,)))
    invoice = samples()["InvoiceIssued"].model_copy(
        update={"payer_emails": ["ap@example.com", PER.upper()]}
    )

    assert await world.handle(invoice) == 3
    assert world.mails() == [
        ("invoice_issued", "ap@example.com"),
        ("invoice_issued", KARI),
        ("invoice_issued", PER),
    ]


async def test_an_event_nobody_is_routed_records_nothing() -> None:
    world = await opened(Platform())
    event = world.event(samples()["OrderPlaced"])
    unrouted = replace(event, event_type="PaymentSucceeded")
    assert (await service.queue_mails(world.uow(), unrouted, links=LINKS)).recorded == 0
    assert world.repo.deliveries == [] and world.repo.wakes == 0


# --- waiting for a cause -----------------------------------------------------------------------


async def test_an_event_before_the_account_people_waits_for_them() -> None:
    """Before the first roles snapshot nobody is known: the event waits for ``people:<id>``
    (its handler's effects roll back; the snapshot's handler releases it)."""
    world = Platform()
    with pytest.raises(WaitForCause) as waiting:
        await world.handle(order_placed())
    assert waiting.value.cause == f"people:{world.account_id}"
    assert world.repo.deliveries == []

    await world.handle(roles())  # the cause; then the released order is applied again
    assert await world.handle(order_placed()) == 1


async def test_r10_an_activation_before_its_order_waits_for_the_order() -> None:
    """R10: an activation read before its order (another topic) waits for ``event:<order>``;
    once the order is consumed it routes by roles at least as new as the order's, so the admin
    appointed before the order gets the access mail."""
    world = await opened(Platform())
    order = world.event(order_placed())
    world.repo.inbox.discard(order.event_id)  # not consumed yet
    activated = SubscriptionActivated(
        order_id=uuid.uuid4(),
        offering="autocad",
        term="annual",
        seats=2,
        time_zone="Europe/Oslo",
        starts_at=AT,
        expires_at=AT + timedelta(days=365),
        renews_at=AT + timedelta(days=365),
        auto_renew=True,
    )
    activation = world.event(activated, causation_id=order.event_id)
    with pytest.raises(WaitForCause) as waiting:
        await service.take_activation(world.uow(), activation, links=LINKS)
    assert waiting.value.cause == f"event:{order.event_id}"

    await world.handle(roles(admins=(OLA,)))  # the appointment, then the order
    world.repo.inbox.add(order.event_id)
    await service.take_order(world.uow(), order, links=LINKS)
    assert (await service.take_activation(world.uow(), activation, links=LINKS)).recorded == 2
    assert [m for m in world.mails() if m[0] == "product_access_granted"] == [
        ("product_access_granted", KARI),
        ("product_access_granted", OLA),
    ]


# --- the mail log (R8) -------------------------------------------------------------------------


async def test_r8_the_buyer_and_operators_read_the_mail_log_others_do_not() -> None:
    """R8: the buyer and operators read the log, newest first; an admin who is not buyer is
    refused (403, rule R8); a stranger learns nothing (404)."""
    snapshot = roles(admins=(OLA,))
    world = await opened(Platform(), snapshot)
    await world.handle(order_placed())
    query = service.MailLogQuery(world.account_id)

    buyer = Principal(snapshot.buyer.user_id, "user", None)
    [line] = await service.read_mail_log(world.uow(), buyer, query)
    assert (line.template, line.recipient, line.status) == ("order_confirmation", KARI, "pending")

    operator = Principal(uuid.uuid4(), "operator", None)
    assert len(await service.read_mail_log(world.uow(), operator, query)) == 1

    admin = Principal(snapshot.secondary_admins[0].user_id, "user", None)
    with pytest.raises(Forbidden) as refused:
        await service.read_mail_log(world.uow(), admin, query)
    assert (refused.value.slug, refused.value.rule) == ("role-required", "R8")
    assert refused.value.extensions == {"required_roles": ["buyer"]}

    with pytest.raises(NotFound):
        await service.read_mail_log(world.uow(), Principal(uuid.uuid4(), "user", None), query)


# --- handing mails over (R12) ------------------------------------------------------------------


@dataclass
class ScriptedSender:
    """A ``MailSender`` that answers as told: per recipient, an error at RCPT or at DATA."""

    at_rcpt: dict[str, Exception] = field(default_factory=dict)
    at_data: dict[str, Exception] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    aborted: int = 0
    _current: str = ""

    async def begin(self, sender: str, recipient: str) -> None:
        self._current = recipient
        if recipient in self.at_rcpt:
            raise self.at_rcpt[recipient]

    async def finish(self, message: OutgoingMail) -> None:
        self.message_ids.append(message.message_id)
        if self._current in self.at_data:
            raise self.at_data[self._current]
        self.delivered.append(message.recipient)

    async def abort(self) -> None:
        self.aborted += 1

    async def close(self) -> None:
        return None


async def queued(*payers: str) -> Platform:
    world = await opened(Platform(), roles(payers=payers))
    invoice = samples()["InvoiceIssued"].model_copy(update={"payer_emails": []})
    await world.handle(invoice)
    return world


async def test_r12_a_mail_handed_over_is_recorded_sent_with_email_sent() -> None:
    world = await queued()
    sender = ScriptedSender()

    assert await service.deliver_due(world.desk(), sender, limit=10) == 1
    assert sender.delivered == [KARI]
    [delivery] = world.repo.deliveries
    assert (delivery.status, delivery.attempts, delivery.sent_at) == ("sent", 1, NOW)
    [sent] = world.events.emitted
    payload = sent.payload_as(EmailSent)
    assert (payload.delivery_id, payload.template) == (delivery.id, "invoice_issued")
    assert await service.deliver_due(world.desk(), sender, limit=10) == 0  # never again


async def test_a_permanent_refusal_fails_the_mail_with_email_failed_and_no_retry() -> None:
    world = await queued()
    sender = ScriptedSender(at_rcpt={KARI: PermanentFailure("550 no such user")})

    await service.deliver_due(world.desk(), sender, limit=10)
    [delivery] = world.repo.deliveries
    assert (delivery.status, delivery.last_error) == ("failed", "550 no such user")
    assert world.events.emitted[0].payload_as(EmailFailed).permanent is True


async def test_a_busy_server_postpones_with_backoff_and_unreachable_postpones_the_rest() -> None:
    """A 4xx postpones the one mail by the backoff; no connection postpones the whole batch
    (nothing was handed over), each without counting as sent."""
    world = await queued(PER)
    sender = ScriptedSender(at_rcpt={KARI: Unreachable("connect: OSError")})  # leased first
    await service.deliver_due(world.desk(), sender, limit=10)
    assert {d.status for d in world.repo.deliveries} == {"pending"}
    assert {d.next_attempt_at for d in world.repo.deliveries} == {NOW + domain.retry_delay(0)}
    assert world.events.emitted == []

    world.clock.advance(timedelta(minutes=1))
    busy = ScriptedSender(at_data={KARI: TransientFailure("451 try later")})
    await service.deliver_due(world.desk(), busy, limit=10)
    kari = next(d for d in world.repo.deliveries if d.recipient.email == KARI)
    assert (kari.status, kari.last_error) == ("pending", "451 try later")
    assert kari.next_attempt_at == world.clock.now() + domain.retry_delay(kari.attempts - 1)
    assert busy.delivered == [PER]


async def test_a_broken_data_answer_is_sent_again_with_the_same_message_id_and_counted() -> None:
    """Nothing lost: the server may or may not hold the mail, so it goes again (with backoff)
    under the same Message-ID, and the possible duplicate is counted."""
    world = await queued()
    sender = ScriptedSender(at_data={KARI: Unconfirmed("data: OSError")})
    doubled = service.MAILS_POSSIBLY_DOUBLED.labels("unanswered_data")
    before = doubled._value.get()

    assert await service.deliver_due(world.desk(), sender, limit=10) == 1
    [delivery] = world.repo.deliveries
    assert delivery.status == "pending" and world.events.emitted == []
    assert doubled._value.get() == before + 1

    world.clock.advance(domain.retry_delay(0))
    again = ScriptedSender()
    assert await service.deliver_due(world.desk(), again, limit=10) == 1
    assert delivery.status == "sent" and again.delivered == [KARI]
    assert sender.message_ids == again.message_ids == [f"<{delivery.id}@subscription-platform>"]


@dataclass
class SlowSender(ScriptedSender):
    """Each DATA takes ``seconds`` of the world's clock."""

    clock: FrozenClock = field(default_factory=lambda: FrozenClock(NOW))
    seconds: float = 0.0

    async def finish(self, message: OutgoingMail) -> None:
        self.clock.advance(timedelta(seconds=self.seconds))
        await super().finish(message)


@dataclass
class WatchingSender(ScriptedSender):
    """Notes, at each MAIL FROM, the status of every mail of the world."""

    world: Platform | None = None
    seen: list[list[str]] = field(default_factory=list)

    async def begin(self, sender: str, recipient: str) -> None:
        assert self.world is not None
        self.seen.append(sorted(d.status for d in self.world.repo.deliveries))
        await super().begin(sender, recipient)


async def test_r12_the_claim_marks_the_whole_batch_handing_over_before_its_first_mail() -> None:
    """Issue 17 [ours]: one hand-over mark for the batch (the claim's statement), not one per
    mail before its DATA; a fast batch renews nothing."""
    world = await queued(PER, OLA)
    sender = WatchingSender(world=world)

    assert await service.deliver_due(world.desk(), sender, limit=10) == 3
    assert sender.seen[0] == ["handing_over"] * 3  # at the first MAIL FROM
    assert world.repo.renewals == 0
    assert {(d.status, d.attempts) for d in world.repo.deliveries} == {("sent", 1)}


@dataclass
class SweptSender(SlowSender):
    """Each DATA takes ``seconds``; during the first one the sweep takes the others' marks."""

    world: Platform | None = None

    async def finish(self, message: OutgoingMail) -> None:
        assert self.world is not None
        if not self.delivered:
            for d in self.world.repo.deliveries:
                if d.recipient.email != self._current:
                    d.status, d.claim_token = "pending", None  # expire_handovers
        await super().finish(message)


async def test_r12_a_slow_batch_leaves_a_mail_whose_mark_the_sweep_took_to_its_new_holder() -> None:
    """A batch older than one SMTP timeout renews its mark before the next DATA; a mail the
    sweep took meanwhile (to hand it over again) is not sent by this worker."""
    world = await queued(PER)
    sender = SweptSender(clock=world.clock, seconds=11.0, world=world)  # the timeout is 10 s

    assert await service.deliver_due(world.desk(), sender, limit=10) == 2
    [first] = sender.delivered
    assert world.repo.renewals == 1
    assert sender.aborted == 1  # the envelope of the mail no longer held: RSET, no DATA
    statuses = {d.recipient.email: d.status for d in world.repo.deliveries}
    assert statuses == {first: "sent", ({KARI, PER} - {first}).pop(): "pending"}


async def test_a_batch_of_mails_is_recorded_sent_in_one_transaction() -> None:
    """The mails of one lease are recorded ``sent`` together (one statement, one commit), each
    with its own EmailSent; the per-mail hand-over mark before DATA stays."""
    world = await queued(PER, OLA)
    sender = ScriptedSender()

    assert await service.deliver_due(world.desk(), sender, limit=10) == 3
    assert sorted(sender.delivered) == sorted([KARI, PER, OLA])
    assert world.repo.sent_records == [3]
    assert {(d.status, d.attempts) for d in world.repo.deliveries} == {("sent", 1)}
    sent = [e.payload_as(EmailSent).delivery_id for e in world.events.emitted]
    assert sorted(sent) == sorted(d.id for d in world.repo.deliveries)


async def test_mails_of_several_accounts_are_recorded_sent_in_account_order() -> None:
    """Issue 17: the EmailSent events of a batch are emitted by account (sorted; each account's
    in its mails' order), so the outbox's per-account locks are taken in the same order as the
    consumer's batch transaction takes them and the two cannot deadlock."""
    world = await queued(PER, OLA)
    accounts = sorted((uuid.uuid4() for _ in world.repo.deliveries), key=str, reverse=True)
    for delivery, account in zip(world.repo.deliveries, accounts, strict=True):
        delivery.account_id = account

    assert await service.deliver_due(world.desk(), ScriptedSender(), limit=10) == 3

    emitted = [e.account_id for e in world.events.emitted]
    assert emitted == sorted(accounts, key=str)


async def test_a_slow_batch_records_what_the_server_took_before_the_hand_over_deadline() -> None:
    """A mail the server took is recorded once it is older than one SMTP timeout, long before
    the sweep (after six) would take its ``handing_over`` for a stopped worker's and send it
    again."""
    world = await queued(PER, OLA)
    sender = SlowSender(clock=world.clock, seconds=11.0)  # the desk's SMTP timeout is 10 s

    assert await service.deliver_due(world.desk(), sender, limit=10) == 3
    assert world.repo.sent_records == [2, 1]
    assert {d.status for d in world.repo.deliveries} == {"sent"}
    assert len(world.events.emitted) == 3


async def test_mails_the_server_took_are_recorded_when_a_later_hand_over_fails() -> None:
    """The database fails at a slow batch's renewal of its mark: the error propagates (the
    worker tries again later), the SMTP session is reset, the mails already handed over are
    recorded ``sent`` first, and the rest stay marked for the sweep."""
    world = await queued(PER)

    async def failing(
        delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]:
        raise OSError("database gone")

    world.repo.renew_handing_over = failing  # type: ignore[method-assign]
    sender = SlowSender(clock=world.clock, seconds=11.0)
    with pytest.raises(OSError, match="database gone"):
        await service.deliver_due(world.desk(), sender, limit=10)
    [first] = sender.delivered
    assert sender.aborted == 1
    assert world.repo.sent_records == [1]
    statuses = {d.recipient.email: d.status for d in world.repo.deliveries}
    assert statuses == {first: "sent", ({KARI, PER} - {first}).pop(): "handing_over"}
    assert [e.payload_as(EmailSent).recipient for e in world.events.emitted] == [first]
