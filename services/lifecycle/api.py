"""Lifecycle's HTTP door: subscriptions (their stage, entitlements and dates) and test clocks.

R8, as decided here: the buyer (and support) sees everything: term, dates, auto-renew, pending
changes. Admins who are not the buyer manage product access, so they see the product view
(offering, seats, stage, entitlements) and no billing or renewal data: no term, dates,
auto-renew, payment method or pending changes. Payers see invoices only (403 here); people of
other accounts get 404.

Test clocks (``test_clocks.py``) are for operators, and only where
``PLATFORM_TEST_CLOCKS_ENABLED`` is true (404 otherwise).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request

from shared.auth import Caller
from shared.problems import READ, problem_responses
from shared.runtime import runtime_of

from . import domain, service, test_clocks
from .repository import PostgresRepository, UnitOfWork
from .schemas import Advance, NewClock, SubscriptionList, SubscriptionView, TestClockView


@contextlib.asynccontextmanager
async def unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """The request's unit of work, on one transaction (committed before the answer leaves)."""
    runtime = runtime_of(request)
    async with runtime.pool.acquire() as conn, conn.transaction():
        yield UnitOfWork.on(PostgresRepository(conn), conn, runtime.outbox, runtime.clock)


subscriptions = APIRouter(prefix="/v1", tags=["lifecycle"])


@subscriptions.get(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionView,
    responses=problem_responses(*READ),
    summary="See a subscription: its stage, what it allows and, for the buyer, its dates",
)
async def get_subscription(
    subscription_id: uuid.UUID, caller: Caller, request: Request
) -> SubscriptionView:
    async with unit_of_work(request) as uow:
        return await service.view_subscription(uow, caller, subscription_id)


@subscriptions.get(
    "/accounts/{account_id}/subscriptions",
    response_model=SubscriptionList,
    responses=problem_responses(*READ),
    summary="List an account's subscriptions",
)
async def list_subscriptions(
    account_id: uuid.UUID, caller: Caller, request: Request
) -> SubscriptionList:
    async with unit_of_work(request) as uow:
        return await service.list_subscriptions(uow, caller, account_id)


# --- test clocks ------------------------------------------------------------------------------


async def clocks_enabled(request: Request) -> None:
    if not runtime_of(request).settings.test_clocks_enabled:
        raise domain.clocks_disabled()


# No Idempotency-Key (moving a clock to a time twice is moving it once) and no state conflict:
# of WRITE's answers, these are the ones a test clock write can give.
CLOCK_WRITE = (401, 403, 404, 422)

clocks = APIRouter(
    prefix="/v1/test-clocks",
    tags=["test clocks"],
    dependencies=[Depends(clocks_enabled)],  # before authentication, as it always was
)


@clocks.post(
    "",
    status_code=201,
    response_model=TestClockView,
    responses=problem_responses(*CLOCK_WRITE),
    summary="Create a test clock frozen at a time (operators)",
)
async def create_clock(body: NewClock, caller: Caller, request: Request) -> TestClockView:
    async with unit_of_work(request) as uow:
        clock = await test_clocks.create_test_clock(uow, caller, body)
    return TestClockView.of(clock)


@clocks.get(
    "/{clock_id}",
    response_model=TestClockView,
    responses=problem_responses(*READ),
    summary="See a test clock: its time and whether everything due has settled (operators)",
)
async def get_clock(clock_id: uuid.UUID, caller: Caller, request: Request) -> TestClockView:
    async with unit_of_work(request) as uow:
        clock = await test_clocks.get_test_clock(uow, caller, clock_id)
    return TestClockView.of(clock)


@clocks.post(
    "/{clock_id}/advance",
    status_code=202,
    response_model=TestClockView,
    responses=problem_responses(*CLOCK_WRITE),
    summary="Move a test clock forward; everything that falls due on the way happens (operators)",
)
async def advance_clock(
    clock_id: uuid.UUID, body: Advance, caller: Caller, request: Request
) -> TestClockView:
    async with unit_of_work(request) as uow:
        clock = await test_clocks.advance_test_clock(uow, caller, clock_id, body)
    return TestClockView.of(clock)
