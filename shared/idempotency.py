"""HTTP ``Idempotency-Key``: the same key and body return the first answer and create nothing.

A new key costs one round trip besides the work: its row is inserted first (``ON CONFLICT DO
NOTHING``), which both claims the key and serialises two concurrent repeats (the second one's
insert waits on the first one's uncommitted row, then finds it and reads the stored answer; if
the first rolled back, the second claims the key itself). The answer is written into that row
after the work, in the same transaction as the write it describes, so nobody ever sees the row
without it. Only a repeat reads (a second round trip). A refused request (a problem) rolls back
and stores nothing, so a corrected retry with the same key is evaluated afresh.
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
        claimed = await conn.fetchval(
            """INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response_body)
               VALUES ($1, $2, $3, 0, 'null') ON CONFLICT (scope, key) DO NOTHING
               RETURNING true""",
            scope,
            key,
            fingerprint,
        )
        if not claimed:  # a repeat: the first request's row is committed (the insert waited)
            stored = await conn.fetchrow(
                "SELECT request_hash, status_code, response_body FROM idempotency_keys"
                " WHERE scope = $1 AND key = $2",
                scope,
                key,
            )
            if stored is None:  # keys are never deleted: the insert saw a committed row
                raise RuntimeError("idempotency key conflicted but is not there")
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
            """UPDATE idempotency_keys SET status_code = $3, response_body = $4::jsonb
               WHERE scope = $1 AND key = $2""",
            scope,
            key,
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
