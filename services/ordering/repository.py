"""Ordering's SQL: every query, returning typed rows (frozen dataclasses, one field a column).

``Repository`` is what the use cases (``service.py``) see; ``PostgresRepository`` is the real one
on an open connection (an HTTP request's transaction or a handler's); unit tests use an
in-memory one. ``row["..."]`` lookups live here and nowhere else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeVar

import asyncpg

from shared import people
from shared.contracts import BillingIdentity, PaymentMethod, Person, RolesChanged, Term
from shared.db import Conn
from shared.time.test_clocks import attach_account

from . import domain

Channel = Literal["direct", "partner"]
PurchaseKind = Literal["order", "renewal"]
# "renewal": an accepted renewal quote (R27 [ours]); the subscription is the one it renews.
OrderKind = Literal["purchase", "trial", "conversion", "seats", "renewal"]


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    name: str
    country: str
    currency: str
    language: str
    time_zone: str
    tax_exempt_reason: str | None
    test_clock_id: uuid.UUID | None
    opened_at: datetime
    prepay_only: bool = False  # R34


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    account_id: uuid.UUID
    email: str
    name: str
    language: str
    created_at: datetime

    def person(self) -> Person:
        return Person(user_id=self.id, email=self.email, name=self.name, language=self.language)


@dataclass(frozen=True)
class Member:
    """A row of the shared roles projection (``account_people``)."""

    account_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    name: str
    language: str
    roles: list[str]


@dataclass(frozen=True)
class SignInLink:
    """Issue 16: a one-time sign-in link; only the hash of its secret is kept."""

    token_hash: bytes
    account_id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True)
class Order:
    """An order of any kind: a purchase, a trial, a trial's conversion (R17), added seats (R30),
    a renewal bought through a partner's renewal quote (R27)."""

    id: uuid.UUID
    order_number: str
    account_id: uuid.UUID
    placed_by: uuid.UUID
    subscription_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    payment_method: PaymentMethod
    channel: Channel
    auto_renew: bool
    placed_at: datetime
    kind: OrderKind
    quote_id: uuid.UUID | None
    price: str | None = None  # R18-R20: the OrderPrice shown (JSON); None: not priced here
    renews_at: datetime | None = None  # R23: the term's dates as shown (shared calendar)
    expires_at: datetime | None = None
    time_zone: str | None = None  # the account's, for the dates' local days


@dataclass(frozen=True)
class Quote:
    id: uuid.UUID
    quote_number: str
    account_id: uuid.UUID
    partner_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    currency: str
    net_amount: Decimal
    usd_value: Decimal
    valid_until: date
    issued_at: datetime
    renews_subscription_id: uuid.UUID | None = None  # R27: a renewal quote
    renews_at: datetime | None = None  # the renewal date it renews
    order_id: uuid.UUID | None = None
    accepted_at: datetime | None = None
    superseded_by: uuid.UUID | None = None  # R27 [ours]: a later renewal quote replaced it
    superseded_at: datetime | None = None


@dataclass(frozen=True)
class Subscription:
    """Ordering's row of a subscription: what it sold plus lifecycle's dates and stage."""

    id: uuid.UUID
    account_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    payment_method: PaymentMethod
    channel: Channel
    auto_renew: bool
    trial: bool
    time_zone: str
    purchased_at: datetime
    stage: domain.Stage = "pending"
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    renews_at: datetime | None = None
    purchase_kind: PurchaseKind = "order"
    pending_term: Term | None = None
    pending_offering: str | None = None
    refunded_at: datetime | None = None
    lapsed_unpaid: bool = False
    renewal_charge_failed: bool = False  # R37: its renewal invoice is open (declined charge)

    def for_rules(self) -> domain.Subscription:
        """What the rules decide on (domain.py)."""
        return domain.Subscription(
            id=self.id,
            offering=self.offering,
            term=self.term,
            seats=self.seats,
            payment_method=self.payment_method,
            channel=self.channel,
            auto_renew=self.auto_renew,
            trial=self.trial,
            stage=self.stage,
            time_zone=self.time_zone,
            purchased_at=self.purchased_at,
            purchase_kind=self.purchase_kind,
            renews_at=self.renews_at,
            expires_at=self.expires_at,
            refunded_at=self.refunded_at,
            renewal_charge_failed=self.renewal_charge_failed,
        )


@dataclass(frozen=True)
class RenewalRequest:
    id: uuid.UUID
    subscription_id: uuid.UUID
    kind: Literal["manual", "late"]
    renews_at: datetime
    payment_method: PaymentMethod
    requested_by: uuid.UUID
    requested_at: datetime
    quote_id: uuid.UUID | None = None  # R27: placed by accepting this renewal quote


@dataclass(frozen=True)
class Refund:
    id: uuid.UUID
    subscription_id: uuid.UUID
    purchase_kind: PurchaseKind
    purchased_at: datetime
    reason: str
    approved_by: uuid.UUID
    approved_at: datetime


SUBSCRIPTION_CHANGES = frozenset(
    {
        "offering",
        "term",
        "seats",
        "payment_method",
        "auto_renew",
        "trial",
        "stage",
        "time_zone",
        "starts_at",
        "expires_at",
        "renews_at",
        "purchased_at",
        "purchase_kind",
        "pending_term",
        "pending_offering",
        "refunded_at",
        "lapsed_unpaid",
        "channel",
        "renewal_charge_failed",
    }
)


@dataclass(frozen=True)
class SavedPaymentMethod:
    """Issue 11: a saved card/PayPal method of invoicing's wallet, as ordering knows it."""

    id: uuid.UUID
    account_id: uuid.UUID
    kind: PaymentMethod
    removed: bool


class Repository(Protocol):
    """What ordering's use cases read and write (one transaction)."""

    async def account(self, account_id: uuid.UUID, *, lock: bool = False) -> Account | None:
        """``lock`` serialises the account's writes (R6 holds under concurrent requests)."""
        ...

    async def insert_account(self, account: Account) -> None: ...
    async def billing_details(self, account_id: uuid.UUID) -> BillingIdentity | None: ...
    async def set_billing_details(
        self, account_id: uuid.UUID, identity: BillingIdentity
    ) -> None: ...
    async def test_clock_time(self, clock_id: uuid.UUID) -> datetime | None: ...
    async def follow_test_clock(self, account_id: uuid.UUID, clock_id: uuid.UUID) -> None: ...
    async def insert_user(self, user: User) -> None: ...
    async def user(self, account_id: uuid.UUID, user_id: uuid.UUID) -> User | None: ...
    async def user_by_email(self, account_id: uuid.UUID, email: str) -> User | None: ...
    async def users(self, account_id: uuid.UUID) -> list[User]: ...
    async def members_by_email(self, email: str) -> list[Member]: ...
    async def insert_sign_in_link(
        self,
        token_hash: bytes,
        account_id: uuid.UUID,
        user_id: uuid.UUID,
        created_at: datetime,
        expires_at: datetime,
    ) -> None: ...
    async def sign_in_link(self, token_hash: bytes, *, lock: bool = False) -> SignInLink | None: ...
    async def mark_sign_in_link_used(self, token_hash: bytes, at: datetime) -> None: ...
    async def members(self, account_id: uuid.UUID) -> list[Member]: ...
    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]: ...
    async def replace_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None: ...
    async def next_order_number(self) -> int: ...
    async def next_quote_number(self) -> int: ...
    async def has_invoice_subscription(
        self, account_id: uuid.UUID, *, other_than: uuid.UUID | None = None
    ) -> bool: ...
    async def saved_payment_method(self, method_id: uuid.UUID) -> SavedPaymentMethod | None: ...
    async def record_saved_payment_method(self, method: SavedPaymentMethod) -> None: ...
    async def insert_order(self, order: Order) -> None: ...
    async def order(self, order_id: uuid.UUID) -> Order | None: ...
    async def orders(self, account_id: uuid.UUID) -> list[Order]: ...
    async def insert_quote(self, quote: Quote) -> None: ...
    async def quote(self, quote_id: uuid.UUID, *, lock: bool = False) -> Quote | None: ...
    async def mark_quote_accepted(
        self, quote_id: uuid.UUID, order_id: uuid.UUID, at: datetime
    ) -> None: ...
    async def supersede_renewal_quotes(
        self, subscription_id: uuid.UUID, by: uuid.UUID, at: datetime
    ) -> list[uuid.UUID]:
        """R27 [ours]: the open (unaccepted, not yet replaced) renewal quotes of the subscription
        are replaced by ``by``; their ids."""
        ...

    async def insert_subscription(self, subscription: Subscription) -> None: ...
    async def subscription(
        self, subscription_id: uuid.UUID, *, lock: bool = False
    ) -> Subscription | None: ...
    async def subscriptions(self, account_id: uuid.UUID) -> list[Subscription]: ...
    async def update_subscription(self, subscription_id: uuid.UUID, **changes: Any) -> bool:
        """Set the named columns; False when ordering does not know the subscription."""
        ...

    async def require_prepayment(self, subscription_id: uuid.UUID) -> None: ...
    async def renewal_requested(self, subscription_id: uuid.UUID, renews_at: datetime) -> bool: ...
    async def insert_renewal_request(self, request: RenewalRequest) -> None: ...
    async def insert_refund(self, refund: Refund) -> None: ...
    async def record_applied_rate(
        self, currency: str, channel: str, effective_from: datetime, rate: Decimal
    ) -> None: ...
    async def applied_rate_at(self, currency: str, channel: str, at: datetime) -> Decimal | None:
        """R19: the applied rate in force at ``at`` (invoicing's, as projected)."""
        ...


RowT = TypeVar("RowT")


def _columns(row_type: type[Any]) -> str:
    return ", ".join(f.name for f in fields(row_type))


def _row(row_type: type[RowT], record: asyncpg.Record | None) -> RowT | None:
    if record is None:
        return None
    return row_type(**{f.name: record[f.name] for f in fields(row_type)})  # type: ignore[arg-type]


def _rows(row_type: type[RowT], records: list[asyncpg.Record]) -> list[RowT]:
    return [row_type(**{f.name: r[f.name] for f in fields(row_type)}) for r in records]  # type: ignore[arg-type]


async def _insert(conn: Conn, table: str, row: Any, columns: tuple[str, ...]) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608
        *(getattr(row, c) for c in columns),
    )


def _all(row_type: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_type))


ACCOUNT = _columns(Account)
USER = _columns(User)
ORDER = _columns(Order)
QUOTE = _columns(Quote)
SUBSCRIPTION = _columns(Subscription)
# Columns a new row sets; the others keep their defaults in the table.
NEW_ACCOUNT = _all(Account)[:-1]
NEW_QUOTE = tuple(
    c for c in _all(Quote) if c not in ("order_id", "accepted_at", "superseded_by", "superseded_at")
)
NEW_SUBSCRIPTION = (
    "id",
    "account_id",
    "offering",
    "term",
    "seats",
    "payment_method",
    "channel",
    "auto_renew",
    "trial",
    "time_zone",
    "purchased_at",
)


@dataclass
class PostgresRepository:
    """The real ``Repository``, on an open connection."""

    conn: Conn

    async def account(self, account_id: uuid.UUID, *, lock: bool = False) -> Account | None:
        query = f"SELECT {ACCOUNT} FROM accounts WHERE id = $1"  # noqa: S608
        return _row(
            Account, await self.conn.fetchrow(query + (" FOR UPDATE" if lock else ""), account_id)
        )

    async def insert_account(self, account: Account) -> None:
        await _insert(self.conn, "accounts", account, NEW_ACCOUNT)

    async def billing_details(self, account_id: uuid.UUID) -> BillingIdentity | None:
        found = await self.conn.fetchval(
            "SELECT billing_details::text FROM accounts WHERE id = $1", account_id
        )
        return BillingIdentity.model_validate_json(found) if isinstance(found, str) else None

    async def set_billing_details(self, account_id: uuid.UUID, identity: BillingIdentity) -> None:
        await self.conn.execute(
            "UPDATE accounts SET billing_details = $2::jsonb WHERE id = $1",
            account_id,
            identity.model_dump_json(),
        )

    async def test_clock_time(self, clock_id: uuid.UUID) -> datetime | None:
        now = await self.conn.fetchval(
            "SELECT now FROM test_clock_times WHERE clock_id = $1", clock_id
        )
        return now if isinstance(now, datetime) else None

    async def follow_test_clock(self, account_id: uuid.UUID, clock_id: uuid.UUID) -> None:
        await attach_account(self.conn, account_id, clock_id)

    async def insert_user(self, user: User) -> None:
        await _insert(self.conn, "users", user, _all(User))

    async def user(self, account_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
        query = f"SELECT {USER} FROM users WHERE account_id = $1 AND id = $2"  # noqa: S608
        return _row(User, await self.conn.fetchrow(query, account_id, user_id))

    async def user_by_email(self, account_id: uuid.UUID, email: str) -> User | None:
        query = f"SELECT {USER} FROM users WHERE account_id = $1 AND lower(email) = lower($2)"  # noqa: S608
        return _row(User, await self.conn.fetchrow(query, account_id, email))

    async def users(self, account_id: uuid.UUID) -> list[User]:
        query = f"SELECT {USER} FROM users WHERE account_id = $1 ORDER BY email"  # noqa: S608
        return _rows(User, await self.conn.fetch(query, account_id))

    async def members_by_email(self, email: str) -> list[Member]:
        query = (
            f"SELECT {_columns(Member)} FROM account_people"  # noqa: S608
            " WHERE lower(email) = lower($1) AND cardinality(roles) > 0 ORDER BY account_id"
        )
        return _rows(Member, await self.conn.fetch(query, email))

    async def insert_sign_in_link(
        self,
        token_hash: bytes,
        account_id: uuid.UUID,
        user_id: uuid.UUID,
        created_at: datetime,
        expires_at: datetime,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO sign_in_links (token_hash, account_id, user_id, created_at, expires_at)
               VALUES ($1, $2, $3, $4, $5)""",
            token_hash,
            account_id,
            user_id,
            created_at,
            expires_at,
        )

    async def sign_in_link(self, token_hash: bytes, *, lock: bool = False) -> SignInLink | None:
        query = f"SELECT {_columns(SignInLink)} FROM sign_in_links WHERE token_hash = $1"  # noqa: S608
        record = await self.conn.fetchrow(query + (" FOR UPDATE" if lock else ""), token_hash)
        return _row(SignInLink, record)

    async def mark_sign_in_link_used(self, token_hash: bytes, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE sign_in_links SET used_at = $2 WHERE token_hash = $1", token_hash, at
        )

    async def members(self, account_id: uuid.UUID) -> list[Member]:
        query = (
            f"SELECT {_columns(Member)} FROM account_people WHERE account_id = $1 ORDER BY email"  # noqa: S608
        )
        return _rows(Member, await self.conn.fetch(query, account_id))

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        return await people.roles_of(self.conn, account_id, user_id)

    async def replace_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None:
        await people.apply_snapshot(self.conn, account_id, snapshot)

    async def next_order_number(self) -> int:
        return int(await self.conn.fetchval("SELECT nextval('order_number_seq')"))

    async def next_quote_number(self) -> int:
        return int(await self.conn.fetchval("SELECT nextval('quote_number_seq')"))

    async def has_invoice_subscription(
        self, account_id: uuid.UUID, *, other_than: uuid.UUID | None = None
    ) -> bool:
        """R14: a live, paid subscription of the account (``other_than`` that one) is paid by
        invoice (a trial pays nothing, so it does not count)."""
        return bool(
            await self.conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE account_id = $1"
                " AND payment_method = 'invoice' AND NOT trial AND stage <> 'cancelled'"
                " AND refunded_at IS NULL AND id IS DISTINCT FROM $2)",
                account_id,
                other_than,
            )
        )

    async def saved_payment_method(self, method_id: uuid.UUID) -> SavedPaymentMethod | None:
        record = await self.conn.fetchrow(
            "SELECT id, account_id, kind, removed FROM saved_payment_methods WHERE id = $1",
            method_id,
        )
        return None if record is None else SavedPaymentMethod(**dict(record))

    async def record_saved_payment_method(self, method: SavedPaymentMethod) -> None:
        await self.conn.execute(
            """INSERT INTO saved_payment_methods (id, account_id, kind, removed)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (id) DO UPDATE SET removed = saved_payment_methods.removed
                   OR EXCLUDED.removed""",
            method.id,
            method.account_id,
            method.kind,
            method.removed,
        )

    async def insert_order(self, order: Order) -> None:
        await _insert(self.conn, "orders", order, _all(Order))

    async def order(self, order_id: uuid.UUID) -> Order | None:
        query = f"SELECT {ORDER} FROM orders WHERE id = $1"  # noqa: S608
        return _row(Order, await self.conn.fetchrow(query, order_id))

    async def orders(self, account_id: uuid.UUID) -> list[Order]:
        query = (
            f"SELECT {ORDER} FROM orders WHERE account_id = $1"  # noqa: S608
            " ORDER BY placed_at, order_number"
        )
        return _rows(Order, await self.conn.fetch(query, account_id))

    async def insert_quote(self, quote: Quote) -> None:
        await _insert(self.conn, "quotes", quote, NEW_QUOTE)

    async def record_applied_rate(
        self, currency: str, channel: str, effective_from: datetime, rate: Decimal
    ) -> None:
        await self.conn.execute(
            """INSERT INTO applied_rates (currency, channel, effective_from, rate)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            currency,
            channel,
            effective_from,
            rate,
        )

    async def applied_rate_at(self, currency: str, channel: str, at: datetime) -> Decimal | None:
        value = await self.conn.fetchval(
            """SELECT rate FROM applied_rates WHERE currency = $1 AND channel = $2
                   AND effective_from <= $3 ORDER BY effective_from DESC LIMIT 1""",
            currency,
            channel,
            at,
        )
        return value if isinstance(value, Decimal) else None

    async def quote(self, quote_id: uuid.UUID, *, lock: bool = False) -> Quote | None:
        query = f"SELECT {QUOTE} FROM quotes WHERE id = $1"  # noqa: S608
        return _row(
            Quote, await self.conn.fetchrow(query + (" FOR UPDATE" if lock else ""), quote_id)
        )

    async def mark_quote_accepted(
        self, quote_id: uuid.UUID, order_id: uuid.UUID, at: datetime
    ) -> None:
        await self.conn.execute(
            "UPDATE quotes SET order_id = $2, accepted_at = $3 WHERE id = $1",
            quote_id,
            order_id,
            at,
        )

    async def supersede_renewal_quotes(
        self, subscription_id: uuid.UUID, by: uuid.UUID, at: datetime
    ) -> list[uuid.UUID]:
        records = await self.conn.fetch(
            """UPDATE quotes SET superseded_by = $2, superseded_at = $3
               WHERE renews_subscription_id = $1 AND id <> $2
                 AND accepted_at IS NULL AND superseded_by IS NULL
               RETURNING id""",
            subscription_id,
            by,
            at,
        )
        return [uuid.UUID(str(r["id"])) for r in records]

    async def insert_subscription(self, subscription: Subscription) -> None:
        await _insert(self.conn, "subscriptions", subscription, NEW_SUBSCRIPTION)

    async def subscription(
        self, subscription_id: uuid.UUID, *, lock: bool = False
    ) -> Subscription | None:
        query = f"SELECT {SUBSCRIPTION} FROM subscriptions WHERE id = $1"  # noqa: S608
        record = await self.conn.fetchrow(query + (" FOR UPDATE" if lock else ""), subscription_id)
        return _row(Subscription, record)

    async def subscriptions(self, account_id: uuid.UUID) -> list[Subscription]:
        query = (
            f"SELECT {SUBSCRIPTION} FROM subscriptions WHERE account_id = $1"  # noqa: S608
            " ORDER BY purchased_at"
        )
        return _rows(Subscription, await self.conn.fetch(query, account_id))

    async def update_subscription(self, subscription_id: uuid.UUID, **changes: Any) -> bool:
        unknown = set(changes) - SUBSCRIPTION_CHANGES
        if unknown:
            raise ValueError(f"not subscription fields: {sorted(unknown)}")
        names = sorted(changes)
        assignments = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
        status = await self.conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = $1",  # noqa: S608
            subscription_id,
            *(changes[n] for n in names),
        )
        return status != "UPDATE 0"

    async def require_prepayment(self, subscription_id: uuid.UUID) -> None:
        """R34: the account of a subscription cancelled on an unpaid invoice pays up front."""
        await self.conn.execute(
            """UPDATE accounts SET prepay_only = true
               WHERE id = (SELECT account_id FROM subscriptions WHERE id = $1 AND lapsed_unpaid)""",
            subscription_id,
        )

    async def renewal_requested(self, subscription_id: uuid.UUID, renews_at: datetime) -> bool:
        return bool(
            await self.conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM renewal_requests"
                " WHERE subscription_id = $1 AND renews_at = $2)",
                subscription_id,
                renews_at,
            )
        )

    async def insert_renewal_request(self, request: RenewalRequest) -> None:
        await _insert(self.conn, "renewal_requests", request, _all(RenewalRequest))

    async def insert_refund(self, refund: Refund) -> None:
        await _insert(self.conn, "refunds", refund, _all(Refund))
