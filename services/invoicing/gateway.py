"""The payment-gateway port and its sandbox adapter.

The sandbox is driven by documented test tokens, so tests and demos choose the outcome:
``tok_success`` (default), ``tok_decline``, ``tok_insufficient_funds``. A charge carries an
idempotency key (the invoice id): charging the same key twice returns the first result, as real
gateways do, so a redelivered event never charges twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    reference: str
    failure_reason: str | None = None


class PaymentGateway(Protocol):
    async def charge(
        self, *, amount: Decimal, currency: str, method: str, token: str, idempotency_key: str
    ) -> ChargeResult: ...


DEFAULT_TEST_TOKEN = "tok_success"  # noqa: S105 - a sandbox token, not a secret


class SandboxGateway:
    FAILURES = {"tok_decline": "card_declined", "tok_insufficient_funds": "insufficient_funds"}

    def __init__(self) -> None:
        self._results: dict[str, ChargeResult] = {}

    async def charge(
        self, *, amount: Decimal, currency: str, method: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        if idempotency_key in self._results:
            return self._results[idempotency_key]
        reason = self.FAILURES.get(token)
        result = ChargeResult(
            succeeded=reason is None,
            reference=f"sandbox_{uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key).hex[:16]}",
            failure_reason=reason,
        )
        self._results[idempotency_key] = result
        return result
