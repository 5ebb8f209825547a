"""Bearer tokens: signed JWTs (HS256) that name a user; expiry is checked against the Clock.

A token only says who is calling. What the caller may do is decided by each service from the
account's data at request time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import jwt

from shared.clock import Clock
from shared.config import Settings
from shared.problems import Problem

Kind = Literal["user", "operator", "partner"]


@dataclass(frozen=True)
class Principal:
    subject: uuid.UUID
    kind: Kind
    account_id: uuid.UUID | None


def issue_token(
    settings: Settings,
    clock: Clock,
    *,
    subject: uuid.UUID,
    kind: Kind = "user",
    account_id: uuid.UUID | None = None,
    ttl: timedelta | None = None,
) -> str:
    now = clock.now()
    claims: dict[str, object] = {
        "sub": str(subject),
        "kind": kind,
        "iss": settings.jwt_issuer,
        "iat": int(now.timestamp()),
        "exp": int((now + (ttl or timedelta(seconds=settings.token_ttl_seconds))).timestamp()),
    }
    if account_id is not None:
        claims["acct"] = str(account_id)
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Authentication required", detail)


def verify_token(settings: Settings, clock: Clock, authorization: str | None) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise unauthorized("Send 'Authorization: Bearer <token>'.")
    token = authorization[7:].strip()
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            issuer=settings.jwt_issuer,
            options={"verify_exp": False, "require": ["sub", "exp", "kind"]},
        )
        expires = int(claims["exp"])
        subject = uuid.UUID(claims["sub"])
        account = uuid.UUID(claims["acct"]) if claims.get("acct") else None
        kind = claims["kind"]
    except (jwt.PyJWTError, ValueError, KeyError) as error:
        raise unauthorized(f"The token is not valid ({type(error).__name__}).") from None
    if kind not in ("user", "operator", "partner"):
        raise unauthorized("Unknown token kind.")
    if clock.now().timestamp() >= expires:
        raise unauthorized("The token has expired; ask for a new one.")
    return Principal(subject=subject, kind=kind, account_id=account)
