"""Accounts, users and roles (R1-R6)."""

from __future__ import annotations

import uuid
from typing import Any

from shared.auth import Principal
from shared.contracts import (
    AccountOpened,
    BillingDetailsChanged,
    BillingIdentity,
    Person,
    RolesChanged,
)
from shared.errors import not_found

from .. import billing_identity, domain, schemas
from ..repository import (
    Account,
    User,
)
from .access import (
    ADMINS,
    BUYER,
    UnitOfWork,
    authorize,
    locked_account,
)

# --- accounts and roles (R1-R6) ------------------------------------------------------------------


async def open_account(uow: UnitOfWork, command: schemas.OpenAccount) -> schemas.NewAccount:
    """R1: the account's first user becomes buyer and primary admin. A new account follows the
    test clock named (already checked: operators only, test clocks enabled)."""
    billing = (
        billing_identity.checked(
            command.billing_details.identity(), command.country, "billing_details"
        )
        if command.billing_details is not None
        else None
    )
    account_id, user_id = uuid.uuid4(), uuid.uuid4()
    now = await uow.time.now()
    if command.test_clock_id is not None:
        now = domain.test_clock_time(await uow.repo.test_clock_time(command.test_clock_id))
        await uow.repo.follow_test_clock(account_id, command.test_clock_id)
    account = Account(
        id=account_id,
        name=command.name,
        country=command.country,
        currency=command.currency,
        language=command.language,
        time_zone=command.time_zone,
        tax_exempt_reason=command.tax_exempt_reason,
        test_clock_id=command.test_clock_id,
        opened_at=now,
    )
    await uow.repo.insert_account(account)
    language = command.buyer.language or command.language
    buyer = User(user_id, account_id, command.buyer.email, command.buyer.name, language, now)
    await uow.repo.insert_user(buyer)
    snapshot = domain.snapshot(domain.first_roles(user_id), {user_id: buyer.person()})
    await uow.repo.replace_roles(account_id, snapshot)
    opened = AccountOpened(
        name=command.name,
        country=command.country,
        currency=command.currency,
        language=command.language,
        time_zone=command.time_zone,
        tax_exempt_reason=command.tax_exempt_reason,
        test_clock_id=command.test_clock_id,
    )
    await uow.events.emit(opened, account_id=account_id)
    await uow.events.emit(snapshot, account_id=account_id)
    if billing is not None:
        await uow.repo.set_billing_details(account_id, billing)
        await uow.events.emit(BillingDetailsChanged(billing=billing), account_id=account_id)
    return schemas.NewAccount.model_validate(
        {
            **vars(account),
            "buyer": buyer.person(),
            "roles": ["buyer", "primary_admin"],
            "billing_details": billing,
        }
    )


async def change_billing_details(
    uow: UnitOfWork, account_id: uuid.UUID, command: schemas.BillingDetails
) -> BillingIdentity:
    """Issue 15: the buyer's (R2) billing address, organisation number and VAT id, validated
    per country; published whole when it changed, printed on documents issued from then on."""
    account = await locked_account(uow, account_id)
    billing = billing_identity.checked(command.identity(), account.country, "")
    if await uow.repo.billing_details(account_id) != billing:
        await uow.repo.set_billing_details(account_id, billing)
        await uow.events.emit(BillingDetailsChanged(billing=billing), account_id=account_id)
    return billing


async def get_account(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID
) -> schemas.AccountView:
    """For its admins and buyer (payers see invoices only, R8)."""
    await authorize(uow, actor, account_id, BUYER | ADMINS | {"operator"}, "see the account", "R8")
    account = await uow.repo.account(account_id)
    if account is None:
        raise not_found("account")
    return schemas.AccountView.model_validate(
        {
            **vars(account),
            "billing_details": await uow.repo.billing_details(account_id),
            "people": [vars(m) for m in await uow.repo.members(account_id)],
            "users": [vars(u) for u in await uow.repo.users(account_id)],
        }
    )


async def add_user(uow: UnitOfWork, account_id: uuid.UUID, command: schemas.NewUser) -> Person:
    """R4: admins manage the account's users."""
    account = await locked_account(uow, account_id)
    domain.check_new_user(await uow.repo.user_by_email(account_id, command.email))
    user = User(
        id=uuid.uuid4(),
        account_id=account_id,
        email=command.email,
        name=command.name,
        language=command.language or account.language,
        created_at=await uow.time.now(account_id),
    )
    await uow.repo.insert_user(user)
    return user.person()


async def _change_roles(uow: UnitOfWork, account_id: uuid.UUID, change: Any) -> RolesChanged:
    """One role change under the account's lock; the full snapshot is stored and published
    only when something changed."""
    await locked_account(uow, account_id)
    members = await uow.repo.members(account_id)
    current = domain.roles_from_rows((m.user_id, m.roles) for m in members)
    users = {u.id: u.person() for u in await uow.repo.users(account_id)}
    changed: domain.Roles = change(current, users)
    snapshot = domain.snapshot(changed, users)
    if changed != current:
        await uow.repo.replace_roles(account_id, snapshot)
        await uow.events.emit(snapshot, account_id=account_id)
    return snapshot


async def transfer_primary_admin(
    uow: UnitOfWork, account_id: uuid.UUID, user_id: uuid.UUID
) -> RolesChanged:
    """R3: the buyer hands the primary-admin role on and becomes a secondary admin."""
    return await _change_roles(
        uow,
        account_id,
        lambda roles, users: domain.transfer_primary_admin(
            roles, domain.user_of_account(users, user_id)
        ),
    )


async def appoint_secondary_admin(
    uow: UnitOfWork, account_id: uuid.UUID, user_id: uuid.UUID
) -> RolesChanged:
    """R4."""
    return await _change_roles(
        uow,
        account_id,
        lambda roles, users: domain.appoint_secondary_admin(
            roles, domain.user_of_account(users, user_id)
        ),
    )


async def remove_secondary_admin(
    uow: UnitOfWork, account_id: uuid.UUID, user_id: uuid.UUID
) -> RolesChanged:
    """R4."""
    return await _change_roles(
        uow, account_id, lambda roles, _: domain.remove_secondary_admin(roles, user_id)
    )


async def change_buyer(uow: UnitOfWork, account_id: uuid.UUID, user_id: uuid.UUID) -> RolesChanged:
    """R5: support's action, never self-service."""
    return await _change_roles(
        uow,
        account_id,
        lambda roles, users: domain.change_buyer(roles, domain.user_of_account(users, user_id)),
    )


async def add_payer(
    uow: UnitOfWork, account_id: uuid.UUID, command: schemas.NewUser
) -> RolesChanged:
    """R6: at most five payers; a sixth is refused and nothing changes (not even the user)."""
    account = await locked_account(uow, account_id)
    payer = await uow.repo.user_by_email(account_id, command.email)
    if payer is None:
        payer = User(
            id=uuid.uuid4(),
            account_id=account_id,
            email=command.email,
            name=command.name,
            language=command.language or account.language,
            created_at=await uow.time.now(account_id),
        )
        await uow.repo.insert_user(payer)
    payer_id = payer.id
    return await _change_roles(uow, account_id, lambda roles, _: domain.add_payer(roles, payer_id))


async def remove_payer(uow: UnitOfWork, account_id: uuid.UUID, user_id: uuid.UUID) -> RolesChanged:
    """R2: payers are the buyer's."""
    return await _change_roles(
        uow, account_id, lambda roles, _: domain.remove_payer(roles, user_id)
    )
