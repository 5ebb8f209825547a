"""What a use case works with: one transaction's repository, the one way to emit, and time.

Every service's ``service.py`` has one async function per command and query, of the form

    async def place_order(uow: UnitOfWork, actor: Principal, command: PlaceOrder) -> Order

``UnitOfWork`` (one per service, built on ``Work`` below) holds the service's repository on the
open transaction, the events it emits (committed with the state: the outbox) and "now" for an
account (its test clock's time when it follows one). The HTTP door and the Kafka handlers build
it from their transaction; unit tests build it from in-memory fakes (``RecordedEvents``,
``FixedTime``), so the use cases run in milliseconds without a database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from shared.contracts import Causation, Contract, Envelope, new_envelope
from shared.db import Conn
from shared.messaging import HandlerContext
from shared.outbox import Emission, Outbox
from shared.time.clock import Clock
from shared.time.test_clocks import account_clock


class Events(Protocol):
    """Where a use case's events go: committed together with its state changes."""

    async def emit(
        self,
        event: Contract,
        *,
        account_id: uuid.UUID,
        subscription_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
        causation: Causation | None = None,
    ) -> Envelope: ...


class Time(Protocol):
    """Now, for an account: its test clock's time when it follows one, else real time."""

    async def now(self, account_id: uuid.UUID | None = None) -> datetime: ...


@dataclass
class OutboxEvents:
    """The real ``Events``: rows in the service's outbox, in the caller's transaction, caused by
    ``causation`` (the consumed event) when there is one."""

    conn: Conn
    outbox: Outbox
    causation: Envelope | None = None

    async def emit(
        self,
        event: Contract,
        *,
        account_id: uuid.UUID,
        subscription_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
        causation: Causation | None = None,
    ) -> Envelope:
        """``causation`` names the cause when it is not the consumed event (kept ids)."""
        cause = causation or self.causation
        emission = Emission(event, account_id, subscription_id, occurred_at, cause)
        (envelope,) = await self.outbox.emit_many(self.conn, [emission])
        return envelope


@dataclass
class AccountTime:
    """The real ``Time``: reads the account's test clock in the open transaction."""

    conn: Conn
    base: Clock

    async def now(self, account_id: uuid.UUID | None = None) -> datetime:
        return (await account_clock(self.conn, self.base, account_id)).now()


@dataclass
class EventTime:
    """``Time`` in a consumed event's transaction: the event's account's time is the clock the
    consumer read for it at the start of the transaction (``HandlerContext.clock``), so it is
    not read again (issue 17: a round trip per use); other accounts' as ``AccountTime``."""

    account_id: uuid.UUID
    account_clock: Clock
    others: AccountTime

    async def now(self, account_id: uuid.UUID | None = None) -> datetime:
        if account_id is not None and account_id == self.account_id:
            return self.account_clock.now()
        return await self.others.now(account_id)


@dataclass
class RecordedEvents:
    """A fake ``Events`` for unit tests: keeps what was emitted, as envelopes."""

    producer: str
    clock: Clock
    emitted: list[Envelope] = field(default_factory=list)

    async def emit(
        self,
        event: Contract,
        *,
        account_id: uuid.UUID,
        subscription_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
        causation: Causation | None = None,
    ) -> Envelope:
        now = self.clock.now()
        envelope = new_envelope(
            event=event,
            producer=self.producer,
            account_id=account_id,
            subscription_id=subscription_id,
            occurred_at=occurred_at or now,
            recorded_at=now,
            causation=causation,
        )
        self.emitted.append(envelope)
        return envelope

    def types(self) -> list[str]:
        return [e.event_type for e in self.emitted]


@dataclass
class FixedTime:
    """A fake ``Time`` for unit tests: every account lives by ``clock``."""

    clock: Clock

    async def now(self, account_id: uuid.UUID | None = None) -> datetime:
        return self.clock.now()


RepoT = TypeVar("RepoT")


@dataclass
class Work(Generic[RepoT]):
    """A unit of work: ``repo`` (SQL on the open transaction, or a fake), ``events``, ``time``.
    Each service names its own: ``UnitOfWork = Work[Repository]``."""

    repo: RepoT
    events: Events
    time: Time

    @classmethod
    def on(
        cls,
        repo: RepoT,
        conn: Conn,
        outbox: Outbox,
        clock: Clock,
        causation: Envelope | None = None,
    ) -> Work[RepoT]:
        """On an open transaction (an HTTP request's, a handler's or a timer's)."""
        return cls(repo, OutboxEvents(conn, outbox, causation), AccountTime(conn, clock))

    @classmethod
    def for_event(cls, repo: RepoT, ctx: HandlerContext) -> Work[RepoT]:
        """In a consumed event's transaction: what it emits is caused by it; its account's
        time is the consumer's reading of that account's clock (``EventTime``)."""
        base = ctx.wall_clock or ctx.clock
        work = cls.on(repo, ctx.conn, ctx.outbox, base, ctx.envelope)
        work.time = EventTime(ctx.envelope.account_id, ctx.clock, AccountTime(ctx.conn, base))
        return work
