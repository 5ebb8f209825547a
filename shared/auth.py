"""Bearer tokens: signed JWTs (HS256) that name a user; expiry is checked against the Clock.

A token only says who is calling. What the caller may do is decided by each service from the
account's data at request time.

Development tokens (signed with ``PLATFORM_JWT_SECRET``, the same setting the services read):

    python -m shared.auth mint --kind operator --subject <uuid>
    python -m shared.auth mint --kind partner --subject <partner uuid>
    python -m shared.auth mint --kind user --subject <user uuid> [--account <uuid>] [--ttl 3600]
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.config import Settings
from shared.problems import Problem
from shared.time.clock import Clock, SystemClock

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
            # exp and iat are judged by the Clock (test clocks), not by the wall clock.
            options={"verify_exp": False, "verify_iat": False, "require": ["sub", "exp", "kind"]},
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


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A signed token (JWT) from `POST /v1/accounts` or `python -m shared.auth mint`.",
)


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The HTTP dependency every service uses: who calls (401 when nobody valid does). It also
    declares the bearer security scheme in the OpenAPI document (Swagger's Authorize button)."""
    checked = getattr(request.state, "principal", None)  # by shared.guard, before the body
    if isinstance(checked, Principal):
        return checked
    runtime = request.app.state.runtime
    authorization = f"Bearer {credentials.credentials}" if credentials else None
    return verify_token(runtime.settings, runtime.clock, authorization)


Caller = Annotated[Principal, Depends(authenticated)]


def main(argv: list[str] | None = None, clock: Clock | None = None) -> str:
    """``python -m shared.auth mint ...``: print a signed token for development."""
    parser = argparse.ArgumentParser(prog="python -m shared.auth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="print a signed bearer token")
    mint.add_argument("--kind", choices=("user", "operator", "partner"), default="user")
    mint.add_argument("--subject", type=uuid.UUID, default=None, help="default: a new uuid")
    mint.add_argument("--account", type=uuid.UUID, default=None)
    mint.add_argument("--ttl", type=int, default=None, help="seconds (default: the setting)")
    args = parser.parse_args(argv)
    token = issue_token(
        Settings(),
        clock or SystemClock(),
        subject=args.subject or uuid.uuid4(),
        kind=args.kind,
        account_id=args.account,
        ttl=timedelta(seconds=args.ttl) if args.ttl else None,
    )
    print(token)
    return token


if __name__ == "__main__":
    main()
