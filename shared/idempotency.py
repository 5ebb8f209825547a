"""HTTP ``Idempotency-Key``: the same key and body return the first answer and create nothing.

The key is locked (transaction-scoped advisory lock) before it is looked up, so two concurrent
repeats serialise: the second sees the first one's stored answer. The stored answer commits in
the same transaction as the write it describes. A refused request (a problem) stores nothing,
so a corrected retry with the same key is evaluated afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from shared.db import Conn
from shared.problems import Problem

MAX_KEY_LENGTH = 200

Work = Callable[[Conn], Awaitable[tuple[int, dict[str, Any]]]]


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str | None) -> str:
    if not key:
        raise Problem(
            400,
            "idempotency-key-required",
            "Idempotency-Key header required",
            "Every write takes an Idempotency-Key header (for example a UUID).",
        )
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            400,
            "idempotency-key-invalid",
            "Idempotency-Key is not valid",
            f"Use at most {MAX_KEY_LENGTH} printable characters.",
        )
    return key


async def run_once(
    pool: asyncpg.Pool, *, scope: str, key: str, fingerprint: str, work: Work
) -> tuple[int, dict[str, Any]]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", scope + key)
        stored = await conn.fetchrow(
            "SELECT request_hash, status_code, response_body FROM idempotency_keys"
            " WHERE scope = $1 AND key = $2",
            scope,
            key,
        )
        if stored is not None:
            if stored["request_hash"] != fingerprint:
                raise Problem(
                    422,
                    "idempotency-key-reused",
                    "Idempotency-Key reused with a different request",
                    "This key was already used for a different request; use a new key.",
                )
            return int(stored["status_code"]), json.loads(stored["response_body"])
        status, body = await work(conn)
        await conn.execute(
            """INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response_body)
               VALUES ($1, $2, $3, $4, $5::jsonb)""",
            scope,
            key,
            fingerprint,
            status,
            json.dumps(body, default=str),
        )
        return status, body


async def run_keyed(
    pool: asyncpg.Pool,
    *,
    scope: str,
    method: str,
    path: str,
    key: str | None,
    body: Any,
    work: Work,
) -> tuple[int, dict[str, Any]]:
    """The HTTP door's one call: check the key, fingerprint the request, run ``work`` once.
    ``body`` is the request's JSON-ready content (a model's ``model_dump(mode="json")``)."""
    fingerprint = request_fingerprint(method, path, body if body is not None else {})
    return await run_once(pool, scope=scope, key=check_key(key), fingerprint=fingerprint, work=work)
