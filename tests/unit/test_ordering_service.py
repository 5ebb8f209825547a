"""Ordering's use cases (services/ordering/service) on in-memory fakes: no database, no broker.

The fakes keep rows in dicts (``InMemoryRepository``), events in ``RecordedEvents`` and time in
``FixedTime``; each test runs in milliseconds. The rules themselves are proved in
test_ordering_domain.py; these prove the orchestration: what is stored, what is emitted, who
may act, in which order the checks run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.ordering import schemas, service
from services.ordering.repository import (
    Account,
    Member,
    Order,
    Quote,
    Refund,
    RenewalRequest,
    SavedPaymentMethod,
    SignInLink,
    Subscription,
    User,
)
from shared import people
from shared.auth import Principal
from shared.contracts import BillingIdentity, RolesChanged, StageChanged, SubscriptionActivated
from shared.errors import DomainError
from shared.time.clock import FrozenClock
from shared.unit_of_work import FixedTime, RecordedEvents, Work

T0 = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
RENEWS = datetime(2026, 6, 9, 22, 0, tzinfo=UTC)  # 2026-06-10 00:00 Europe/Oslo


@dataclass
class InMemoryRepository:
    """A fake ``Repository``: the same answers as PostgresRepository, kept in dicts."""

    accounts: dict[uuid.UUID, Account] = field(default_factory=dict)
    users_by_id: dict[uuid.UUID, User] = field(default_factory=dict)
    roles: dict[uuid.UUID, RolesChanged] = field(default_factory=dict)
    orders_by_id: dict[uuid.UUID, Order] = field(default_factory=dict)
    quotes: dict[uuid.UUID, Quote] = field(default_factory=dict)
    subscriptions_by_id: dict[uuid.UUID, Subscription] = field(default_factory=dict)
    renewals: list[RenewalRequest] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    clocks: dict[uuid.UUID, datetime] = field(default_factory=dict)
    followers: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    saved_methods: dict[uuid.UUID, SavedPaymentMethod] = field(default_factory=dict)
    applied_rates: dict[tuple[str, str, datetime], Decimal] = field(default_factory=dict)
    billing: dict[uuid.UUID, BillingIdentity] = field(default_factory=dict)
    sign_in_links: dict[bytes, SignInLink] = field(default_factory=dict)
    sequence: int = 0

    async def account(self, account_id: uuid.UUID, *, lock: bool = False) -> Account | None:
        return self.accounts.get(account_id)

    async def insert_account(self, account: Account) -> None:
        self.accounts[account.id] = account

    async def billing_details(self, account_id: uuid.UUID) -> BillingIdentity | None:
        return self.billing.get(account_id)

    async def set_billing_details(self, account_id: uuid.UUID, identity: BillingIdentity) -> None:
        self.billing[account_id] = identity

    async def test_clock_time(self, clock_id: uuid.UUID) -> datetime | None:
        return self.clocks.get(clock_id)

    async def follow_test_clock(self, account_id: uuid.UUID, clock_id: uuid.UUID) -> None:
        self.followers[account_id] = clock_id

    async def insert_user(self, user: User) -> None:
        self.users_by_id[user.id] = user

    async def user(self, account_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
        found = self.users_by_id.get(user_id)
        return found if found and found.account_id == account_id else None

    async def user_by_email(self, account_id: uuid.UUID, email: str) -> User | None:
        return next(
            (u for u in await self.users(account_id) if u.email.lower() == email.lower()), None
        )

    async def users(self, account_id: uuid.UUID) -> list[User]:
        found = [u for u in self.users_by_id.values() if u.account_id == account_id]
        return sorted(found, key=lambda u: u.email)

    async def members(self, account_id: uuid.UUID) -> list[Member]:
        snapshot = self.roles.get(account_id)
        if snapshot is None:
            return []
        held = people.roles_by_person(snapshot)
        return sorted(
            (
                Member(account_id, uid, p.email, p.name, p.language, sorted(roles))
                for uid, (p, roles) in held.items()
            ),
            key=lambda m: m.email,
        )

    async def members_by_email(self, email: str) -> list[Member]:
        return [
            m
            for account_id in sorted(self.roles)
            for m in await self.members(account_id)
            if m.email.lower() == email.lower() and m.roles
        ]

    async def insert_sign_in_link(
        self,
        token_hash: bytes,
        account_id: uuid.UUID,
        user_id: uuid.UUID,
        created_at: datetime,
        expires_at: datetime,
    ) -> None:
        link = SignInLink(token_hash, account_id, user_id, created_at, expires_at, None)
        self.sign_in_links[token_hash] = link

    async def sign_in_link(self, token_hash: bytes, *, lock: bool = False) -> SignInLink | None:
        return self.sign_in_links.get(token_hash)

    async def mark_sign_in_link_used(self, token_hash: bytes, at: datetime) -> None:
        self.sign_in_links[token_hash] = replace(self.sign_in_links[token_hash], used_at=at)

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        for member in await self.members(account_id):
            if member.user_id == user_id:
                return set(member.roles)
        return set()

    async def replace_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None:
        self.roles[account_id] = snapshot

    async def next_order_number(self) -> int:
        self.sequence += 1
        return self.sequence

    async def next_quote_number(self) -> int:
        self.sequence += 1
        return self.sequence

    async def has_invoice_subscription(
        self, account_id: uuid.UUID, *, other_than: uuid.UUID | None = None
    ) -> bool:
        return any(
            s.account_id == account_id
            and s.id != other_than
            and s.payment_method == "invoice"
            and not s.trial
            and s.stage != "cancelled"
            and s.refunded_at is None
            for s in self.subscriptions_by_id.values()
        )

    async def saved_payment_method(self, method_id: uuid.UUID) -> SavedPaymentMethod | None:
        return self.saved_methods.get(method_id)

    async def record_saved_payment_method(self, method: SavedPaymentMethod) -> None:
        self.saved_methods[method.id] = method

    async def insert_order(self, order: Order) -> None:
        self.orders_by_id[order.id] = order

    async def order(self, order_id: uuid.UUID) -> Order | None:
        return self.orders_by_id.get(order_id)

    async def orders(self, account_id: uuid.UUID) -> list[Order]:
        return [o for o in self.orders_by_id.values() if o.account_id == account_id]

    async def record_applied_rate(
        self, currency: str, channel: str, effective_from: datetime, rate: Decimal
    ) -> None:
        self.applied_rates.setdefault((currency, channel, effective_from), rate)

    async def applied_rate_at(self, currency: str, channel: str, at: datetime) -> Decimal | None:
        found = [
            (effective, rate)
            for (cur, chan, effective), rate in self.applied_rates.items()
            if (cur, chan) == (currency, channel) and effective <= at
        ]
        return max(found)[1] if found else None

    async def insert_quote(self, quote: Quote) -> None:
        self.quotes[quote.id] = quote

    async def quote(self, quote_id: uuid.UUID, *, lock: bool = False) -> Quote | None:
        return self.quotes.get(quote_id)

    async def mark_quote_accepted(
        self, quote_id: uuid.UUID, order_id: uuid.UUID, at: datetime
    ) -> None:
        self.quotes[quote_id] = replace(self.quotes[quote_id], order_id=order_id, accepted_at=at)

    async def supersede_renewal_quotes(
        self, subscription_id: uuid.UUID, by: uuid.UUID, at: datetime
    ) -> list[uuid.UUID]:
        replaced = [
            q.id
            for q in self.quotes.values()
            if q.renews_subscription_id == subscription_id
            and q.id != by
            and q.accepted_at is None
            and q.superseded_by is None
        ]
        for quote_id in replaced:
            self.quotes[quote_id] = replace(
                self.quotes[quote_id], superseded_by=by, superseded_at=at
            )
        return replaced

    async def insert_subscription(self, subscription: Subscription) -> None:
        self.subscriptions_by_id[subscription.id] = subscription

    async def subscription(
        self, subscription_id: uuid.UUID, *, lock: bool = False
    ) -> Subscription | None:
        return self.subscriptions_by_id.get(subscription_id)

    async def subscriptions(self, account_id: uuid.UUID) -> list[Subscription]:
        return [s for s in self.subscriptions_by_id.values() if s.account_id == account_id]

    async def update_subscription(self, subscription_id: uuid.UUID, **changes: Any) -> bool:
        current = self.subscriptions_by_id.get(subscription_id)
        if current is None:
            return False
        self.subscriptions_by_id[subscription_id] = replace(current, **changes)
        return True

    async def require_prepayment(self, subscription_id: uuid.UUID) -> None:
        lapsed = self.subscriptions_by_id.get(subscription_id)
        if lapsed is not None and lapsed.lapsed_unpaid:
            account = self.accounts[lapsed.account_id]
            self.accounts[account.id] = replace(account, prepay_only=True)

    async def renewal_requested(self, subscription_id: uuid.UUID, renews_at: datetime) -> bool:
        return any(
            r.subscription_id == subscription_id and r.renews_at == renews_at for r in self.renewals
        )

    async def insert_renewal_request(self, request: RenewalRequest) -> None:
        self.renewals.append(request)

    async def insert_refund(self, refund: Refund) -> None:
        self.refunds.append(refund)


@dataclass
class World:
    repo: InMemoryRepository
    events: RecordedEvents
    clock: FrozenClock
    uow: service.UnitOfWork

    def emitted(self, event_type: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events.emitted if e.event_type == event_type]


@pytest.fixture
def world() -> World:
    repo, clock = InMemoryRepository(), FrozenClock(T0)
    events = RecordedEvents("ordering", clock)
    return World(repo, events, clock, Work(repo, events, FixedTime(clock)))


def new_account(currency: str = "NOK") -> schemas.OpenAccount:
    return schemas.OpenAccount.model_validate(
        {
            "name": "Fjord AS",
            "country": "NO",
            "currency": currency,
            "time_zone": "Europe/Oslo",
            "buyer": {"email": "kari@fjord.example", "name": "Kari"},
        }
    )


async def opened(world: World) -> tuple[uuid.UUID, Principal]:
    account = await service.open_account(world.uow, new_account())
    return account.id, Principal(account.buyer.user_id, "user", None)


def order(**changes: Any) -> schemas.PlaceOrder:
    body = {"offering": "autocad", "term": "annual", "seats": 2, "payment_method": "card"}
    return schemas.PlaceOrder.model_validate({**body, **changes})


async def refused(call: Any) -> DomainError:
    with pytest.raises(DomainError) as error:
        await call
    return error.value


async def active(world: World, subscription_id: uuid.UUID, renews_at: datetime = RENEWS) -> None:
    """Lifecycle's SubscriptionActivated, as the handler applies it."""
    activated = SubscriptionActivated(
        order_id=uuid.uuid4(),
        offering="autocad",
        term="annual",
        seats=2,
        starts_at=T0,
        expires_at=renews_at - timedelta(seconds=1),
        renews_at=renews_at,
        time_zone="Europe/Oslo",
        auto_renew=True,
    )
    assert await service.record_activation(world.uow, subscription_id, activated)


def stage_changed(from_stage: str, to_stage: str, reason: str) -> StageChanged:
    return StageChanged.model_validate(
        {
            "from_stage": from_stage,
            "to_stage": to_stage,
            "reason": reason,
            "entitlements": {},
            "effective_at": T0,
        }
    )


# --- accounts and roles ----------------------------------------------------------------------


async def test_r1_opening_an_account_makes_its_first_user_buyer_and_primary_admin(
    world: World,
) -> None:
    account = await service.open_account(world.uow, new_account())
    assert account.roles == ["buyer", "primary_admin"]
    assert await world.repo.roles_of(account.id, account.buyer.user_id) == {
        "buyer",
        "primary_admin",
    }
    assert world.events.types() == ["AccountOpened", "RolesChanged"]
    assert account.opened_at == T0


async def test_a_new_account_follows_a_known_test_clock_and_lives_by_its_time(
    world: World,
) -> None:
    clock_id, clock_time = uuid.uuid4(), datetime(2030, 1, 1, tzinfo=UTC)
    command = new_account().model_copy(update={"test_clock_id": clock_id})
    unknown = await refused(service.open_account(world.uow, command))
    assert (unknown.status, unknown.slug) == (409, "test-clock-unknown")
    world.repo.clocks[clock_id] = clock_time
    account = await service.open_account(world.uow, command)
    assert account.opened_at == clock_time and world.repo.followers[account.id] == clock_id


async def test_r8_strangers_get_404_members_without_the_role_403(world: World) -> None:
    account_id, _ = await opened(world)
    stranger = Principal(uuid.uuid4(), "user", None)
    missing = await refused(service.get_order(world.uow, stranger, uuid.uuid4()))
    assert missing.status == 404
    hidden = await refused(service.list_orders(world.uow, stranger, account_id))
    assert (hidden.status, hidden.slug) == (404, "not-found")
    payer = await service.add_payer(
        world.uow, account_id, schemas.NewUser(email="per@fjord.example", name="Per")
    )
    payer_id = payer.payers[0].user_id
    denied = await refused(
        service.list_orders(world.uow, Principal(payer_id, "user", None), account_id)
    )
    assert (denied.status, denied.slug, denied.rule) == (403, "buyer-or-operator-only", "R8")
    operator = Principal(uuid.uuid4(), "operator", None)
    assert (await service.list_orders(world.uow, operator, account_id)).items == []


async def test_r3_r4_roles_change_by_snapshot_and_only_when_something_changed(
    world: World,
) -> None:
    account_id, buyer = await opened(world)
    admin = await service.add_user(
        world.uow, account_id, schemas.NewUser(email="ola@fjord.example", name="Ola")
    )
    handed = await service.transfer_primary_admin(world.uow, account_id, admin.user_id)
    assert handed.primary_admin.user_id == admin.user_id
    assert [p.user_id for p in handed.secondary_admins] == [buyer.subject]
    again = await service.transfer_primary_admin(world.uow, account_id, admin.user_id)
    assert again == handed
    assert world.events.types().count("RolesChanged") == 2  # opening + one change
    stranger = await refused(service.change_buyer(world.uow, account_id, uuid.uuid4()))
    assert stranger.status == 404


async def test_r4_one_user_per_email(world: World) -> None:
    account_id, _ = await opened(world)
    twice = await refused(
        service.add_user(
            world.uow, account_id, schemas.NewUser(email="KARI@fjord.example", name="Kari")
        )
    )
    assert (twice.status, twice.slug) == (409, "user-exists")


async def test_r6_a_sixth_payer_is_refused_and_nothing_changes(world: World) -> None:
    account_id, _ = await opened(world)
    for n in range(5):
        payer = schemas.NewUser(email=f"p{n}@fjord.example", name=f"P{n}")
        await service.add_payer(world.uow, account_id, payer)
    before = world.repo.roles[account_id]
    sixth = schemas.NewUser(email="p5@fjord.example", name="P5")
    limit = await refused(service.add_payer(world.uow, account_id, sixth))
    assert (limit.status, limit.slug, limit.rule) == (422, "payer-limit", "R6")
    assert world.repo.roles[account_id] == before


# --- buying ----------------------------------------------------------------------------------


async def test_r16_a_direct_order_writes_the_order_the_subscription_and_order_placed(
    world: World,
) -> None:
    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    assert placed.order_number == "ORD-00000001" and placed.kind == "purchase"
    assert placed.channel == "direct" and placed.placed_by == buyer.subject
    subscription = world.repo.subscriptions_by_id[placed.subscription_id]
    assert (subscription.seats, subscription.stage, subscription.purchased_at) == (2, "pending", T0)
    [event] = world.emitted("OrderPlaced")
    assert event["buyer_email"] == "kari@fjord.example" and event["currency"] == "NOK"


async def test_r14_r15_card_limit_and_invoice_rules_but_not_for_a_trial(world: World) -> None:
    account_id, buyer = await opened(world)
    large = order(offering="autocad", seats=5000)
    over = await refused(service.place_order(world.uow, buyer, account_id, large))
    assert (over.slug, over.rule, over.extensions["limit_usd"]) == (
        "card-limit-exceeded",
        "R15",
        "25000",
    )
    invoice = await refused(
        service.place_order(world.uow, buyer, account_id, order(payment_method="invoice"))
    )
    assert (invoice.slug, invoice.rule) == ("pay-by-invoice-not-allowed", "R14")
    # R17 [ours, issue 11]: a trial has at most 5 seats (it was any number, 5000 here)
    trial = await service.place_order(world.uow, buyer, account_id, order(seats=5, trial=True))
    assert trial.kind == "trial"
    assert world.events.types().count("OrderPlaced") == 1


async def test_r34_after_a_cancellation_on_unpaid_credit_the_account_prepays(
    world: World,
) -> None:
    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    lapsed = stage_changed("active", "expired", "invoice_unpaid")
    await service.record_stage_change(world.uow, placed.subscription_id, lapsed)
    cancelled = stage_changed("suspended", "cancelled", "invoice_unpaid")
    await service.record_stage_change(world.uow, placed.subscription_id, cancelled)
    assert world.repo.accounts[account_id].prepay_only
    prepay = await refused(
        service.place_order(world.uow, buyer, account_id, order(payment_method="invoice"))
    )
    assert (prepay.slug, prepay.rule) == ("prepayment-required", "R34")


async def test_r34_r36_a_no_grace_offering_cancelled_on_unpaid_credit_makes_the_account_prepay(
    world: World,
) -> None:
    """Issue 11, defect 6: lifecycle's own rule takes a no-grace offering (R36) from Active
    straight to Cancelled on an unpaid invoice; ordering must still require prepayment."""
    from services.lifecycle import domain as lifecycle

    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order(offering="docs"))
    state = lifecycle.SubscriptionState(
        stage="active",
        term="annual",
        offering="docs",
        time_zone="Europe/Oslo",
        auto_renew=True,
        trial=False,
        renews_at=RENEWS,
    )
    step = lifecycle.lapse(state, T0, "invoice_unpaid")  # what lifecycle really decides
    assert (step.from_stage, step.to_stage) == ("active", "cancelled")
    cancelled = stage_changed(step.from_stage, step.to_stage, step.reason)
    await service.record_stage_change(world.uow, placed.subscription_id, cancelled)
    assert world.repo.accounts[account_id].prepay_only
    prepay = await refused(
        service.place_order(world.uow, buyer, account_id, order(payment_method="invoice"))
    )
    assert (prepay.slug, prepay.rule) == ("prepayment-required", "R34")


async def test_r16_a_partner_quotes_and_the_buyer_accepts_once(world: World) -> None:
    account_id, buyer = await opened(world)
    partner = Principal(uuid.uuid4(), "partner", None)
    command = schemas.IssueQuote(offering="autocad", term="annual", seats=3)
    not_partner = await refused(service.issue_quote(world.uow, buyer, account_id, command))
    assert (not_partner.status, not_partner.slug) == (403, "partner-only")
    quote = await service.issue_quote(world.uow, partner, account_id, command)
    assert quote.valid_until == T0.date() + timedelta(days=30)
    other = Principal(uuid.uuid4(), "partner", None)
    assert (await refused(service.get_quote(world.uow, other, quote.id))).status == 404
    accept = schemas.AcceptQuote(payment_method="invoice")
    placed = await service.accept_quote(world.uow, buyer, quote.id, accept)
    assert (placed.channel, placed.quote_id, placed.payment_method) == (
        "partner",
        quote.id,
        "invoice",
    )
    twice = await refused(service.accept_quote(world.uow, buyer, quote.id, accept))
    assert (twice.status, twice.slug) == (409, "quote-already-accepted")


async def test_r17_a_trial_converts_in_place_through_the_same_order_writer(world: World) -> None:
    account_id, buyer = await opened(world)
    trial = await service.place_order(world.uow, buyer, account_id, order(trial=True))
    convert = schemas.ConvertTrial(term="monthly", seats=4, payment_method="card")
    converted = await service.convert_trial(world.uow, buyer, trial.subscription_id, convert)
    assert converted.subscription_id == trial.subscription_id
    assert (converted.kind, converted.term, converted.seats) == ("conversion", "monthly", 4)
    assert world.repo.subscriptions_by_id[trial.subscription_id].trial is False
    again = await refused(service.convert_trial(world.uow, buyer, trial.subscription_id, convert))
    assert (again.slug, again.rule) == ("not-a-trial", "R17")


# --- subscription changes --------------------------------------------------------------------


async def test_r24_auto_renew_off_is_emitted_once(world: World) -> None:
    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    off = schemas.SetAutoRenew(auto_renew=False)
    answer = await service.set_auto_renew(world.uow, placed.subscription_id, off)
    await service.set_auto_renew(world.uow, placed.subscription_id, off)
    assert answer.auto_renew is False
    assert world.events.types().count("AutoRenewChanged") == 1


async def test_r28_r29_pending_changes_apply_to_the_renewal_request(world: World) -> None:
    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    undated = await refused(
        service.change_term(world.uow, placed.subscription_id, schemas.ChangeTerm(new_term=None))
    )
    assert undated.slug == "subscription-not-active-yet"
    await active(world, placed.subscription_id)
    changed = await service.change_term(
        world.uow, placed.subscription_id, schemas.ChangeTerm(new_term="monthly")
    )
    assert changed.pending_term == "monthly"
    world.clock.advance(RENEWS - T0 - timedelta(days=10))
    renewal = await service.request_renewal(
        world.uow, buyer, placed.subscription_id, schemas.RequestRenewal()
    )
    assert (renewal.kind, renewal.term, renewal.renews_at) == ("manual", "monthly", RENEWS)


async def test_r27_one_renewal_request_per_renewal_date(world: World) -> None:
    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    await active(world, placed.subscription_id)
    world.clock.advance(RENEWS - T0 - timedelta(days=10))
    command = schemas.RequestRenewal()
    await service.request_renewal(world.uow, buyer, placed.subscription_id, command)
    twice = await refused(
        service.request_renewal(world.uow, buyer, placed.subscription_id, command)
    )
    assert (twice.status, twice.slug, twice.rule) == (409, "renewal-already-requested", "R27")
    assert world.events.types().count("RenewalRequested") == 1


async def test_r30_added_seats_are_co_termed_and_bounded(world: World) -> None:
    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    await active(world, placed.subscription_id)
    added = await service.add_seats(
        world.uow, buyer, placed.subscription_id, schemas.AddSeats(seats=3)
    )
    assert (added.kind, added.seats, added.total_seats) == ("seats", 3, 5)
    assert added.coterm_until == RENEWS and added.placed_at == T0
    too_many = await refused(
        service.add_seats(world.uow, buyer, placed.subscription_id, schemas.AddSeats(seats=9_999))
    )
    assert (too_many.status, too_many.slug) == (422, "validation")


async def test_r38_r39_a_refund_inside_the_window_cancels_at_once(world: World) -> None:
    account_id, buyer = await opened(world)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    world.clock.advance(timedelta(days=31))
    late = await refused(
        service.request_refund(
            world.uow, buyer, placed.subscription_id, schemas.RequestRefund(reason="late")
        )
    )
    assert (late.slug, late.rule) == ("refund-window-closed", "R38")
    second = await service.place_order(world.uow, buyer, account_id, order())
    refund = await service.request_refund(
        world.uow, buyer, second.subscription_id, schemas.RequestRefund(reason="mistake")
    )
    assert refund.purchase_kind == "order"
    cancelled = world.repo.subscriptions_by_id[second.subscription_id]
    assert (cancelled.stage, cancelled.auto_renew) == ("cancelled", False)
    assert world.events.types()[-1] == "RefundApproved"


async def test_lifecycle_events_for_a_subscription_ordering_did_not_sell_change_nothing(
    world: World,
) -> None:
    stage = stage_changed("active", "expired", "expired")
    assert not await service.record_stage_change(world.uow, uuid.uuid4(), stage)


# --- renewal by partner quote (R27 [ours], R16, R14, R26, R34, R37) ----------------------------


def renewal_quote(subscription_id: uuid.UUID, **changes: Any) -> schemas.IssueQuote:
    body = {"offering": "autocad", "term": "annual", "seats": 3}
    return schemas.IssueQuote.model_validate(
        {**body, "renews_subscription_id": subscription_id, **changes}
    )


async def test_r26_r27_r34_a_renewal_quote_only_inside_the_windows_and_never_when_cancelled(
    world: World,
) -> None:
    account_id, buyer = await opened(world)
    partner = Principal(uuid.uuid4(), "partner", None)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    sub_id = placed.subscription_id
    await active(world, sub_id)
    command = renewal_quote(sub_id)
    early = await refused(service.issue_quote(world.uow, partner, account_id, command))
    assert (early.status, early.slug, early.rule) == (422, "renewal-window-closed", "R27")
    stranger_account, _ = await opened(world)
    foreign = await refused(service.issue_quote(world.uow, partner, stranger_account, command))
    assert (foreign.status, foreign.slug) == (404, "not-found")
    world.clock.advance(RENEWS - T0 - timedelta(days=89))  # R26: inside the 90 local days
    other = renewal_quote(sub_id, offering="revit")
    switched = await refused(service.issue_quote(world.uow, partner, account_id, other))
    assert (switched.status, switched.extensions["errors"][0]["field"]) == (422, "offering")
    quote = await service.issue_quote(world.uow, partner, account_id, command)
    assert (quote.renews_subscription_id, quote.renews_at) == (sub_id, RENEWS)
    world.clock.advance(timedelta(days=89 + 45))  # R27: the late window has closed
    closed = await refused(service.issue_quote(world.uow, partner, account_id, command))
    assert closed.slug == "renewal-window-closed"
    await service.record_stage_change(
        world.uow, sub_id, stage_changed("suspended", "cancelled", "not_renewed")
    )
    cancelled = await refused(service.issue_quote(world.uow, partner, account_id, command))
    assert (cancelled.status, cancelled.slug, cancelled.rule) == (
        409,
        "subscription-cancelled",
        "R34",
    )


async def test_r27_r16_r14_a_reissued_renewal_quote_replaces_the_open_one_and_renews_in_place(
    world: World,
) -> None:
    """Late (R27): Expired after the renewal date, the partner quotes twice; the first is
    replaced and refused; the second, accepted by invoice (R14), renews the same subscription
    with the quote's priced line (R16) and no new subscription."""
    account_id, buyer = await opened(world)
    partner = Principal(uuid.uuid4(), "partner", None)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    sub_id = placed.subscription_id
    await active(world, sub_id)
    world.clock.advance(RENEWS - T0 + timedelta(days=3))
    await service.record_stage_change(
        world.uow, sub_id, stage_changed("active", "expired", "not_renewed")
    )
    first = await service.issue_quote(world.uow, partner, account_id, renewal_quote(sub_id))
    second = await service.issue_quote(
        world.uow, partner, account_id, renewal_quote(sub_id, seats=4)
    )
    replaced = await service.get_quote(world.uow, buyer, first.id)
    assert (replaced.superseded_by, replaced.superseded_at) == (second.id, world.clock.now())
    assert world.emitted("QuoteIssued")[-1]["replaces_quote_id"] == str(first.id)
    by_invoice = schemas.AcceptQuote(payment_method="invoice")
    stale = await refused(service.accept_quote(world.uow, buyer, first.id, by_invoice))
    assert (stale.status, stale.slug, stale.rule) == (409, "quote-superseded", "R27")
    assert stale.extensions["superseded_by"] == str(second.id)

    renewal = await service.accept_quote(world.uow, buyer, second.id, by_invoice)
    assert (renewal.kind, renewal.subscription_id, renewal.quote_id) == (
        "renewal",
        sub_id,
        second.id,
    )
    assert (renewal.channel, renewal.payment_method, renewal.seats) == ("partner", "invoice", 4)
    assert world.events.types().count("OrderPlaced") == 1  # the first purchase's only
    assert list(world.repo.subscriptions_by_id) == [sub_id]  # no new subscription
    [requested] = world.emitted("RenewalRequested")
    assert (requested["kind"], requested["quote_id"], requested["channel"]) == (
        "late",
        str(second.id),
        "partner",
    )
    [line] = requested["priced_lines"]
    assert (line["quantity"], line["net_amount"]) == (4, str(second.net_amount))
    renewed = world.repo.subscriptions_by_id[sub_id]
    assert (renewed.payment_method, renewed.channel) == ("invoice", "partner")
    again = await refused(service.accept_quote(world.uow, buyer, second.id, by_invoice))
    assert again.slug == "quote-already-accepted"
    third = await refused(
        service.issue_quote(world.uow, partner, account_id, renewal_quote(sub_id))
    )
    assert (third.status, third.slug) == (409, "renewal-already-requested")


async def test_r27_a_renewal_quote_accepted_before_the_renewal_date_renews_that_date(
    world: World,
) -> None:
    account_id, buyer = await opened(world)
    partner = Principal(uuid.uuid4(), "partner", None)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    sub_id = placed.subscription_id
    await active(world, sub_id)
    world.clock.advance(RENEWS - T0 - timedelta(days=30))
    quote = await service.issue_quote(world.uow, partner, account_id, renewal_quote(sub_id))
    by_card = schemas.AcceptQuote(payment_method="card", payment_token="tok_success")
    await service.accept_quote(world.uow, buyer, quote.id, by_card)
    [requested] = world.emitted("RenewalRequested")
    assert (requested["kind"], requested["payment_token"]) == ("manual", "tok_success")
    [request] = world.repo.renewals
    assert (request.renews_at, request.quote_id) == (RENEWS, quote.id)


async def test_r37_r27_no_renewal_quote_while_the_declined_renewal_invoice_is_open(
    world: World,
) -> None:
    """R37 [ours]: the renewal is already invoiced; a quote would invoice it twice."""
    account_id, buyer = await opened(world)
    partner = Principal(uuid.uuid4(), "partner", None)
    placed = await service.place_order(world.uow, buyer, account_id, order())
    sub_id = placed.subscription_id
    await active(world, sub_id)
    world.clock.advance(RENEWS - T0 - timedelta(days=5))
    quote = await service.issue_quote(world.uow, partner, account_id, renewal_quote(sub_id))
    world.clock.advance(timedelta(days=6))
    await service.record_stage_change(
        world.uow, sub_id, stage_changed("active", "expired", "payment_failed")
    )
    by_invoice = schemas.AcceptQuote(payment_method="invoice")
    open_invoice = await refused(service.accept_quote(world.uow, buyer, quote.id, by_invoice))
    assert (open_invoice.status, open_invoice.slug, open_invoice.rule) == (
        409,
        "renewal-invoice-open",
        "R37",
    )
    issue = service.issue_quote(world.uow, partner, account_id, renewal_quote(sub_id))
    assert (await refused(issue)).slug == "renewal-invoice-open"
    await service.record_stage_change(
        world.uow, sub_id, stage_changed("suspended", "suspended", "expired_period_ended")
    )
    assert world.repo.subscriptions_by_id[sub_id].renewal_charge_failed  # until active again


# --- the renewal's payment method (R14, issue 11) ---------------------------------------------


def switch(method: str, method_id: uuid.UUID | None = None) -> schemas.ChangeRenewalPaymentMethod:
    return schemas.ChangeRenewalPaymentMethod.model_validate(
        {"payment_method": method, "payment_method_id": method_id}
    )


def world_at(at: datetime) -> World:
    repo, clock = InMemoryRepository(), FrozenClock(at)
    events = RecordedEvents("ordering", clock)
    return World(repo, events, clock, Work(repo, events, FixedTime(clock)))


async def two_card_subscriptions(world: World) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    account_id, buyer = await opened(world)
    first = await service.place_order(world.uow, buyer, account_id, order())
    second = await service.place_order(world.uow, buyer, account_id, order())
    return account_id, first.subscription_id, second.subscription_id


@pytest.mark.parametrize(
    ("at", "other_by_invoice", "allowed"),
    [
        (datetime(2024, 9, 15, 21, 59, tzinfo=UTC), True, False),  # 2024-09-15 23:59 Oslo
        (datetime(2024, 9, 15, 22, 0, tzinfo=UTC), True, True),  # 2024-09-16 00:00 Oslo
        (datetime(2024, 9, 15, 22, 0, tzinfo=UTC), False, False),
        (T0, True, True),
        (T0, False, False),
    ],
)
async def test_r14_a_renewal_switches_to_invoice_from_2024_09_16_only_beside_another_invoice_sub(
    at: datetime, other_by_invoice: bool, allowed: bool
) -> None:
    """R14 (seed: "Fra og med 16. september 2024 ... bare hvis du allerede har et annet
    abonnement med betaling med faktura"): otherwise through a partner quote."""
    world = world_at(at)
    _, subscription_id, other_id = await two_card_subscriptions(world)
    if other_by_invoice:  # as if the other was bought through a partner quote, paid by invoice
        await world.repo.update_subscription(other_id, payment_method="invoice")
    call = service.change_renewal_payment_method(world.uow, subscription_id, switch("invoice"))
    if allowed:
        answer = await call
        assert answer.payment_method == "invoice"
        [changed] = world.emitted("RenewalPaymentMethodChanged")
        assert (changed["payment_method"], changed["payment_method_id"]) == ("invoice", None)
        return
    refusal = await refused(call)
    assert (refusal.status, refusal.slug, refusal.rule) == (
        422,
        "pay-by-invoice-not-allowed",
        "R14",
    )
    assert refusal.extensions["renew_via"] == "partner-quote"
    assert "partner quote" in refusal.detail
    assert not world.emitted("RenewalPaymentMethodChanged")
    assert world.repo.subscriptions_by_id[subscription_id].payment_method == "card"


async def test_r14_the_subscription_itself_paid_by_invoice_is_not_another(world: World) -> None:
    account_id, subscription_id, _ = await two_card_subscriptions(world)
    await world.repo.update_subscription(subscription_id, payment_method="invoice")
    card = SavedPaymentMethod(uuid.uuid4(), account_id, "card", False)
    await world.repo.record_saved_payment_method(card)
    await service.change_renewal_payment_method(world.uow, subscription_id, switch("card", card.id))
    back = await refused(
        service.change_renewal_payment_method(world.uow, subscription_id, switch("invoice"))
    )
    assert back.slug == "pay-by-invoice-not-allowed"


async def test_r2_a_card_renewal_names_one_of_the_accounts_own_saved_methods(world: World) -> None:
    account_id, subscription_id, _ = await two_card_subscriptions(world)
    foreign = SavedPaymentMethod(uuid.uuid4(), uuid.uuid4(), "card", False)
    gone = SavedPaymentMethod(uuid.uuid4(), account_id, "card", True)
    paypal = SavedPaymentMethod(uuid.uuid4(), account_id, "paypal", False)
    for method in (foreign, gone, paypal):
        await world.repo.record_saved_payment_method(method)
    for method_id in (foreign.id, gone.id, uuid.uuid4(), None):
        refusal = await refused(
            service.change_renewal_payment_method(
                world.uow, subscription_id, switch("card", method_id)
            )
        )
        assert refusal.extensions["errors"][0]["field"] == "payment_method_id"
    chosen = await service.change_renewal_payment_method(
        world.uow, subscription_id, switch("paypal", paypal.id)
    )
    assert chosen.payment_method == "paypal"
    [changed] = world.emitted("RenewalPaymentMethodChanged")
    assert changed["payment_method_id"] == str(paypal.id)


# --- sign-in links for the portal (issue 16) ----------------------------------------------------


def mailed_secret(world: World) -> str:
    [requested] = world.emitted("SignInLinkRequested")
    link: str = requested["link"]
    assert link.startswith("https://portal.example/sign-in/")
    return link.rsplit("/", 1)[1]


async def test_a_sign_in_link_is_mailed_to_a_member_and_works_once(world: World) -> None:
    account_id, buyer = await opened(world)
    request = schemas.SignInLinkRequest(email="KARI@fjord.example")
    await service.request_sign_in_links(world.uow, request, portal_url="https://portal.example/")
    [requested] = world.emitted("SignInLinkRequested")
    assert (requested["user_id"], requested["email"]) == (str(buyer.subject), "kari@fjord.example")
    assert datetime.fromisoformat(requested["expires_at"]) == T0 + timedelta(minutes=15)
    secret = mailed_secret(world)
    # Only the hash is kept: the secret itself is nowhere in the repository.
    assert all(secret.encode() not in h for h in world.repo.sign_in_links)

    redemption = schemas.SignInLinkRedemption(secret=secret)
    signed_in = await service.redeem_sign_in_link(world.uow, redemption)
    assert (signed_in.account_id, signed_in.user_id) == (account_id, buyer.subject)
    again = await refused(service.redeem_sign_in_link(world.uow, redemption))
    assert (again.status, again.slug) == (409, "sign-in-link-used")


async def test_a_sign_in_link_expires_after_fifteen_minutes(world: World) -> None:
    await opened(world)
    request = schemas.SignInLinkRequest(email="kari@fjord.example")
    await service.request_sign_in_links(world.uow, request, portal_url="https://portal.example")
    world.clock.advance(timedelta(minutes=15))
    redemption = schemas.SignInLinkRedemption(secret=mailed_secret(world))
    late = await refused(service.redeem_sign_in_link(world.uow, redemption))
    assert (late.status, late.slug) == (410, "sign-in-link-expired")


async def test_an_unknown_address_gets_the_same_answer_and_no_link(world: World) -> None:
    await opened(world)
    request = schemas.SignInLinkRequest(email="nobody@fjord.example")
    known = schemas.SignInLinkRequest(email="kari@fjord.example")
    unknown_answer = await service.request_sign_in_links(world.uow, request, portal_url="x")
    assert world.emitted("SignInLinkRequested") == []
    assert unknown_answer == await service.request_sign_in_links(world.uow, known, portal_url="x")
    forged = schemas.SignInLinkRedemption(secret="A" * 43)
    unknown = await refused(service.redeem_sign_in_link(world.uow, forged))
    assert (unknown.status, unknown.slug) == (404, "sign-in-link-unknown")
