"""Notifications' SQL, returning typed rows.

``SqlRepository`` wraps either one open transaction (a handler's, a request's, the recording of
a sent mail) or the pool (the delivery workers' single-statement steps, each committed on its
own: the hand-over protocol needs those commits, see ``service.hand_over``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from shared import people, tracing
from shared.contracts import Cause, RolesChanged
from shared.db import Conn

from .domain import Account, Member, Recipient, RenderedMail
from .mailer import message_id_for

Db = Conn | asyncpg.Pool
CONSUMER = "notifications"  # the Kafka consumer (inbox, deferred events)
DELIVERY_CHANNEL = "deliveries"  # LISTEN/NOTIFY: a mail was queued, wake the workers
# The database (or the way to it) failed, not the statement: worth trying again.
OUTAGE: tuple[type[BaseException], ...] = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class DueMail:
    """A queued mail leased to one delivery worker."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    account_id: uuid.UUID
    recipient: str
    roles: tuple[str, ...]
    template: str
    subject: str
    body_text: str
    body_html: str
    attempts: int
    message_id: str
    correlation_id: uuid.UUID | None = None  # of the event that asked for the mail
    traceparent: str | None = None  # the trace of the handler that queued it (shared.tracing)
    dated_at: datetime | None = None  # the Date header: the business clock when queued

    def cause(self) -> Cause:
        """The event that asked for this mail, as the cause of EmailSent / EmailFailed."""
        return Cause(self.event_id, self.correlation_id or self.event_id)


@dataclass(frozen=True)
class LoggedMail:
    """One line of an account's mail log: no bodies (they may hold personal data)."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    recipient: str
    roles: tuple[str, ...]
    template: str
    language: str
    subject: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None
    failed_at: datetime | None


@dataclass(frozen=True)
class RoutingFacts:
    """What routing an event's mails needs, read in one round trip (``routing_facts``)."""

    members: list[Member]  # the account's people, by email
    account: Account | None
    offering: str | None  # of the event's subscription
    cause_consumed: bool  # the asked-about cause's inbox row exists (committed or this one's)
    waiting: frozenset[str]  # of the asked-about causes, those some event waits for


class Repository(Protocol):
    """What the use cases need of notifications' tables."""

    async def upsert_account(
        self, account_id: uuid.UUID, name: str, language: str, time_zone: str
    ) -> None: ...
    async def account(self, account_id: uuid.UUID) -> Account | None: ...
    async def remember_subscription(
        self, subscription_id: uuid.UUID, account_id: uuid.UUID, offering: str
    ) -> None: ...
    async def offering_of(self, subscription_id: uuid.UUID | None) -> str | None: ...
    async def members(self, account_id: uuid.UUID) -> list[Member]: ...
    async def routing_facts(
        self,
        account_id: uuid.UUID,
        *,
        subscription_id: uuid.UUID | None = None,
        remember_offering: str | None = None,
        cause: uuid.UUID | None = None,
        waits_for: Sequence[str] = (),
    ) -> RoutingFacts: ...
    async def apply_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> list[Member]: ...
    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]: ...
    async def lock_people(self, account_id: uuid.UUID) -> None: ...
    async def consumed(self, event_id: uuid.UUID) -> bool: ...
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
    ) -> int: ...
    async def deliveries_of(
        self, account_id: uuid.UUID, status: str | None, limit: int, before: datetime | None
    ) -> list[LoggedMail]: ...
    async def claim_due(
        self, now: datetime, token: uuid.UUID, lease_until: datetime, limit: int
    ) -> list[DueMail]: ...
    async def renew_handing_over(
        self, delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]: ...
    async def mark_sent(
        self, delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]: ...
    async def mark_failed(
        self, delivery_id: uuid.UUID, token: uuid.UUID, error: str, now: datetime
    ) -> bool: ...
    async def postpone(
        self,
        delivery_ids: list[uuid.UUID],
        token: uuid.UUID,
        error: str,
        next_attempt_at: list[datetime],
    ) -> None: ...
    async def expire_handovers(self, older_than: datetime) -> int: ...


@dataclass
class SqlRepository:
    """The real ``Repository`` over one open transaction or the pool."""

    db: Db

    # --- who is who, accounts and subscriptions (projections) ----------------------------------

    async def upsert_account(
        self, account_id: uuid.UUID, name: str, language: str, time_zone: str
    ) -> None:
        await self.db.execute(
            """INSERT INTO accounts (id, name, language, time_zone) VALUES ($1, $2, $3, $4)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
                   language = EXCLUDED.language, time_zone = EXCLUDED.time_zone""",
            account_id,
            name,
            language,
            time_zone,
        )

    async def account(self, account_id: uuid.UUID) -> Account | None:
        row = await self.db.fetchrow(
            "SELECT name, language, time_zone FROM accounts WHERE id = $1", account_id
        )
        return Account(row["name"], row["language"], row["time_zone"]) if row else None

    async def remember_subscription(
        self, subscription_id: uuid.UUID, account_id: uuid.UUID, offering: str
    ) -> None:
        await self.db.execute(
            """INSERT INTO subscriptions (id, account_id, offering) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO UPDATE SET offering = EXCLUDED.offering""",
            subscription_id,
            account_id,
            offering,
        )

    async def offering_of(self, subscription_id: uuid.UUID | None) -> str | None:
        if subscription_id is None:
            return None
        value = await self.db.fetchval(
            "SELECT offering FROM subscriptions WHERE id = $1", subscription_id
        )
        return str(value) if value else None

    async def members(self, account_id: uuid.UUID) -> list[Member]:
        rows = await self.db.fetch(
            """SELECT email, name, language, roles FROM account_people WHERE account_id = $1
               ORDER BY email, user_id""",
            account_id,
        )
        return [Member(r["email"], r["name"], r["language"], frozenset(r["roles"])) for r in rows]

    async def apply_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> list[Member]:
        """Replace the account's people with the snapshot (one statement); returns them as
        ``members`` would read them now."""
        if isinstance(self.db, asyncpg.Pool):
            async with self.db.acquire() as conn, conn.transaction():
                rows = await people.apply_snapshot(conn, account_id, snapshot)
        else:
            rows = await people.apply_snapshot(self.db, account_id, snapshot)
        return [Member(r["email"], r["name"], r["language"], frozenset(r["roles"])) for r in rows]

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        return await people.roles_of(self.db, account_id, user_id)

    async def lock_people(self, account_id: uuid.UUID) -> None:
        """Serialise, per account, reading who is who (and deciding to wait) with applying a
        roles snapshot and releasing the events that waited for it."""
        key = f"notifications-people:{account_id}"
        await self.db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)

    async def consumed(self, event_id: uuid.UUID) -> bool:
        """Whether this consumer has consumed the event (its inbox row, committed or this
        transaction's)."""
        query = "SELECT true FROM inbox WHERE consumer = $1 AND event_id = $2"
        return bool(await self.db.fetchval(query, CONSUMER, event_id))

    async def routing_facts(
        self,
        account_id: uuid.UUID,
        *,
        subscription_id: uuid.UUID | None = None,
        remember_offering: str | None = None,
        cause: uuid.UUID | None = None,
        waits_for: Sequence[str] = (),
    ) -> RoutingFacts:
        """Everything routing an event needs, in one round trip: takes the people lock
        (``lock_people``), optionally remembers the subscription's offering
        (``remember_subscription``), and reads the account's people (``members``), the account
        (``account``), the subscription's offering (``offering_of``), whether ``cause`` was
        consumed (``consumed``) and which of ``waits_for`` some deferred event waits for.

        All in one statement, so the reads share the snapshot taken before the people lock is
        granted. That is safe because only this consumer takes the lock and writes the people
        and the deferred events of an account, always inside the account's turn
        (``shared.messaging``: the inbox row's statement takes it first), so the lock is never
        waited for here: nothing of this account can commit between the snapshot and the lock.
        """
        rows = await self.db.fetch(
            """WITH people_lock AS (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))),
               remembered AS (
                   INSERT INTO subscriptions (id, account_id, offering)
                   SELECT $3, $2, $4 WHERE $3::uuid IS NOT NULL AND $4::text IS NOT NULL
                   ON CONFLICT (id) DO UPDATE SET offering = EXCLUDED.offering
                   RETURNING offering),
               facts AS (
                   SELECT a.name AS account_name, a.language AS account_language,
                          a.time_zone AS account_time_zone,
                          coalesce((SELECT offering FROM remembered),
                                   (SELECT offering FROM subscriptions WHERE id = $3))
                              AS offering,
                          EXISTS (SELECT 1 FROM inbox WHERE consumer = $5 AND event_id = $6)
                              AS cause_consumed,
                          ARRAY(SELECT DISTINCT cause FROM deferred_events
                                WHERE consumer = $5 AND cause = ANY($7::text[])) AS waiting
                   FROM people_lock LEFT JOIN accounts a ON a.id = $2)
               SELECT f.*, p.email, p.name, p.language, p.roles
               FROM facts f LEFT JOIN account_people p ON p.account_id = $2
               ORDER BY p.email, p.user_id""",
            f"notifications-people:{account_id}",
            account_id,
            subscription_id,
            remember_offering,
            CONSUMER,
            cause,
            list(waits_for),
        )
        first = rows[0]
        account = None
        if first["account_name"] is not None:
            account = Account(
                first["account_name"], first["account_language"], first["account_time_zone"]
            )
        members = [
            Member(r["email"], r["name"], r["language"], frozenset(r["roles"]))
            for r in rows
            if r["email"] is not None
        ]
        offering = first["offering"]
        return RoutingFacts(
            members=members,
            account=account,
            offering=str(offering) if offering else None,
            cause_consumed=bool(first["cause_consumed"]),
            waiting=frozenset(first["waiting"]),
        )

    # --- the deliveries table ------------------------------------------------------------------

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
        """An event's mails in one statement, in the given order, and the delivery workers
        woken in it (a NOTIFY on the delivery channel, sent at commit); returns how many were
        recorded. R12: the unique (event, address) key makes a second queueing of the same
        mail a no-op."""
        if not mails:
            return 0
        ids = [uuid.uuid4() for _ in mails]
        for recipient, _ in mails:
            if any("," in role for role in recipient.roles):
                raise ValueError(f"a role name with a comma: {recipient.roles!r}")
        recorded = await self.db.fetchval(
            """WITH rows AS (
                   INSERT INTO deliveries (id, event_id, event_type, account_id, recipient,
                       roles, template, language, subject, body_text, body_html,
                       next_attempt_at, created_at, message_id, correlation_id, traceparent,
                       dated_at)
                   SELECT m.id, $1, $2, $3, m.recipient, string_to_array(m.roles, ','),
                          m.template, m.language, m.subject, m.body_text, m.body_html, $4, $4,
                          m.message_id, $5, $6, $7
                   FROM unnest($8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[],
                               $13::text[], $14::text[], $15::text[], $16::text[])
                        WITH ORDINALITY AS m(id, recipient, roles, template, language, subject,
                                             body_text, body_html, message_id, n)
                   ORDER BY m.n
                   ON CONFLICT (event_id, recipient) DO NOTHING RETURNING 1),
               woken AS (SELECT pg_notify($17, ''))
               SELECT (SELECT count(*) FROM rows) FROM woken""",
            event_id,
            event_type,
            account_id,
            now,
            correlation_id,
            tracing.current_traceparent(),  # the SMTP hand-over continues this trace
            dated_at or now,
            ids,
            [recipient.email.lower() for recipient, _ in mails],
            [",".join(recipient.roles) for recipient, _ in mails],
            [recipient.template for recipient, _ in mails],
            [recipient.language for recipient, _ in mails],
            [mail.subject for _, mail in mails],
            [mail.text for _, mail in mails],
            [mail.html for _, mail in mails],
            [message_id_for(delivery_id) for delivery_id in ids],
            DELIVERY_CHANNEL,
        )
        return int(recorded)

    async def deliveries_of(
        self, account_id: uuid.UUID, status: str | None, limit: int, before: datetime | None
    ) -> list[LoggedMail]:
        rows = await self.db.fetch(
            """SELECT id, event_id, event_type, recipient, roles, template, language, subject,
                      status, attempts, last_error, next_attempt_at, created_at, sent_at,
                      failed_at
               FROM deliveries
               WHERE account_id = $1 AND ($2::text IS NULL OR status = $2)
                 AND ($4::timestamptz IS NULL OR created_at < $4)
               ORDER BY created_at DESC, recipient LIMIT $3""",
            account_id,
            status,
            limit,
            before,
        )
        return [LoggedMail(**{**dict(r), "roles": tuple(r["roles"])}) for r in rows]

    async def claim_due(
        self, now: datetime, token: uuid.UUID, lease_until: datetime, limit: int
    ) -> list[DueMail]:
        """Lease up to ``limit`` due mails to one worker and mark them ``handing_over`` (the
        hand-over mark of the whole batch, before its first MAIL FROM: see ``delivery.py``);
        an expired lease is claimable again. ``attempts`` is the count before this one."""
        rows = await self.db.fetch(
            """UPDATE deliveries SET claim_token = $2, claimed_until = $3,
                   status = 'handing_over', handed_over_at = $1, attempts = attempts + 1
               WHERE id IN (
                   SELECT id FROM deliveries
                   WHERE status = 'pending' AND next_attempt_at <= $1
                     AND (claimed_until IS NULL OR claimed_until < $1)
                   ORDER BY next_attempt_at, created_at LIMIT $4
                   FOR UPDATE SKIP LOCKED)
               RETURNING id, event_id, event_type, account_id, recipient, roles, template,
                         subject, body_text, body_html, attempts - 1 AS attempts, message_id,
                         correlation_id,
                         traceparent, coalesce(dated_at, created_at) AS dated_at""",
            now,
            token,
            lease_until,
            limit,
        )
        return [DueMail(**{**dict(r), "roles": tuple(r["roles"])}) for r in rows]

    async def renew_handing_over(
        self, delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]:
        """A slow batch's hand-over mark moved to ``now`` (so the sweep leaves a live worker's
        mails alone); returns those this worker still holds (the others were handed over again
        by the sweep: not this worker's any more)."""
        rows = await self.db.fetch(
            """UPDATE deliveries SET handed_over_at = $3
               WHERE id = ANY($1::uuid[]) AND claim_token = $2 AND status = 'handing_over'
               RETURNING id""",
            delivery_ids,
            token,
            now,
        )
        return {row["id"] for row in rows}

    async def mark_sent(
        self, delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]:
        """Several mails the server took, in one statement; returns those this worker still
        held (the others were handed over again by the sweep and are recorded by that try)."""
        rows = await self.db.fetch(
            """UPDATE deliveries SET status = 'sent', sent_at = $3, claim_token = NULL,
                   claimed_until = NULL
               WHERE id = ANY($1::uuid[]) AND claim_token = $2 RETURNING id""",
            delivery_ids,
            token,
            now,
        )
        return {row["id"] for row in rows}

    async def mark_failed(
        self, delivery_id: uuid.UUID, token: uuid.UUID, error: str, now: datetime
    ) -> bool:
        updated = await self.db.fetchval(
            """UPDATE deliveries SET status = 'failed', last_error = $3, failed_at = $4,
                   attempts = attempts + CASE WHEN status = 'pending' THEN 1 ELSE 0 END,
                   claim_token = NULL, claimed_until = NULL
               WHERE id = $1 AND claim_token = $2 RETURNING true""",
            delivery_id,
            token,
            error,
            now,
        )
        return bool(updated)

    async def postpone(
        self,
        delivery_ids: list[uuid.UUID],
        token: uuid.UUID,
        error: str,
        next_attempt_at: list[datetime],
    ) -> None:
        """Back to pending with a later attempt (a 4xx or no connection: nothing was handed
        over)."""
        await self.db.execute(
            """UPDATE deliveries d SET status = 'pending', last_error = $3,
                   attempts = d.attempts + CASE WHEN d.status = 'pending' THEN 1 ELSE 0 END,
                   next_attempt_at = p.at, claim_token = NULL, claimed_until = NULL,
                   handed_over_at = NULL
               FROM unnest($1::uuid[], $4::timestamptz[]) AS p(id, at)
               WHERE d.id = p.id AND d.claim_token = $2""",
            delivery_ids,
            token,
            error,
            next_attempt_at,
        )

    async def expire_handovers(self, older_than: datetime) -> int:
        """A hand-over older than any SMTP timeout means its worker died (or lost its database
        before recording the answer): the mail may or may not have arrived, so it is handed
        over again, due now, with the same Message-ID. Returns how many."""
        result = await self.db.execute(
            """UPDATE deliveries SET status = 'pending', next_attempt_at = handed_over_at,
                   last_error = 'worker stopped during hand-over: sent again',
                   claim_token = NULL, claimed_until = NULL, handed_over_at = NULL
               WHERE status = 'handing_over' AND handed_over_at < $1""",
            older_than,
        )
        return int(result.split()[-1])


async def unsent_mail_of_clock(conn: Conn, clock_id: uuid.UUID, now: datetime) -> int:
    """Mails of a test clock's accounts still to be handed over (a clock step waits for them)."""
    count = await conn.fetchval(
        """SELECT count(*) FROM deliveries d
           JOIN account_clocks a ON a.account_id = d.account_id
           WHERE a.clock_id = $1 AND d.status IN ('pending', 'handing_over')""",
        clock_id,
    )
    return int(count)
