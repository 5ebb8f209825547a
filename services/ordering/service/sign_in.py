"""Sign-in links for the portal (issue 16): ordering owns the users, so it mints and redeems
the one-time links.

A request names an e-mail address; every account where that address holds a role gets its own
link (a ``SignInLinkRequested`` each, keyed by the account, mailed by notifications to that
address only). The answer is the same whether or not the address is known, so the door tells
nobody who has an account. Only the SHA-256 of a link's secret is stored; redeeming a link
marks it used in the same transaction that checks it (``FOR UPDATE``), so a link works once,
until it expires (``SIGN_IN_LINK_TTL`` on the account's clock).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from shared.contracts import SignInLinkRequested
from shared.errors import Conflict, Gone, NotFound

from .. import schemas
from .access import UnitOfWork

SIGN_IN_LINK_TTL = timedelta(minutes=15)


def link_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def request_sign_in_links(
    uow: UnitOfWork, command: schemas.SignInLinkRequest, *, portal_url: str
) -> schemas.SignInLinkAccepted:
    """One link per account where the address holds a role; nothing said about which."""
    for member in await uow.repo.members_by_email(command.email):
        now = await uow.time.now(member.account_id)
        secret = secrets.token_urlsafe(32)
        expires_at = now + SIGN_IN_LINK_TTL
        await uow.repo.insert_sign_in_link(
            link_hash(secret), member.account_id, member.user_id, now, expires_at
        )
        await uow.events.emit(
            SignInLinkRequested(
                user_id=member.user_id,
                email=member.email,
                name=member.name,
                language="nb" if member.language == "nb" else "en",
                link=f"{portal_url.rstrip('/')}/sign-in/{secret}",
                expires_at=expires_at,
            ),
            account_id=member.account_id,
        )
    return schemas.SignInLinkAccepted()


async def redeem_sign_in_link(
    uow: UnitOfWork, command: schemas.SignInLinkRedemption
) -> schemas.SignedIn:
    """A link works once and until it expires; the caller mints the bearer token."""
    link = await uow.repo.sign_in_link(link_hash(command.secret), lock=True)
    if link is None:
        raise NotFound(
            "sign-in-link-unknown",
            "This sign-in link is not valid",
            "Ask for a new sign-in link.",
        )
    if link.used_at is not None:
        raise Conflict(
            "sign-in-link-used",
            "This sign-in link has already been used",
            "A sign-in link works once. Ask for a new one.",
        )
    now = await uow.time.now(link.account_id)
    if now >= link.expires_at:
        raise Gone(
            "sign-in-link-expired",
            "This sign-in link has expired",
            f"A sign-in link is good for {int(SIGN_IN_LINK_TTL.total_seconds() // 60)} minutes."
            " Ask for a new one.",
        )
    await uow.repo.mark_sign_in_link_used(link.token_hash, now)
    user = await uow.repo.user(link.account_id, link.user_id)
    account = await uow.repo.account(link.account_id)
    if user is None or account is None:  # never deleted; a link names its account's user
        raise NotFound("sign-in-link-unknown", "This sign-in link is not valid")
    return schemas.SignedIn(
        account_id=link.account_id,
        account_name=account.name,
        time_zone=account.time_zone,
        user_id=user.id,
        email=user.email,
        name=user.name,
        language="nb" if user.language == "nb" else "en",
        token="",  # minted by the door, never stored with an Idempotency-Key
    )
