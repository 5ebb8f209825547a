"""The payment-gateway port, its card and PayPal sandbox adapters, and transient-error retries.

The sandboxes are driven by documented test tokens, so tests and demos choose the outcome:

=========================  ==========================================================
``tok_success`` (default)  the charge (or refund) succeeds
``tok_decline``            declined: ``card_declined`` / ``paypal_declined``
``tok_insufficient_funds`` declined: ``insufficient_funds``
``tok_network_error``      the first call for a key fails with a network error, a
                           retry with the same key succeeds (a transient error)
``tok_network_down``       every call fails with a network error
=========================  ==========================================================

Saving a method (``describe``) asks the gateway what a token stands for: the sandbox knows the
tokens above (a card as a test card's brand and last four, a PayPal token as the sandbox
buyer's e-mail) and refuses any other (``InvalidToken``), so nothing but a gateway token is
ever stored, and never a card number.

A charge carries an idempotency key (the invoice id and the attempt number): charging the same
key twice returns the first result, as real gateways do, so a redelivered event never charges
twice even if our transaction rolled back after the gateway answered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from prometheus_client import Counter

from shared import tracing
from shared.contracts import PaymentMethod

DEFAULT_TEST_TOKEN = "tok_success"  # noqa: S105 - a sandbox token, not a secret


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    reference: str
    failure_reason: str | None = None


class GatewayUnavailable(Exception):
    """A transient failure (network, timeout): the same call may be tried again."""


class InvalidToken(Exception):
    """The gateway does not know the token (a typo, a card number, another gateway's token)."""


@dataclass(frozen=True)
class TokenDescription:
    """What the gateway shows of a saved method: never the number, only a label."""

    label: str  # "Visa **** 4242" / "PayPal sandbox-buyer@example.com"


# The sandbox's test cards, as the documented tokens stand for them (brand, last four).
SANDBOX_CARDS = {
    "tok_success": ("Visa", "4242"),
    "tok_decline": ("Visa", "0002"),
    "tok_insufficient_funds": ("Visa", "9995"),
    "tok_network_error": ("Mastercard", "4444"),
    "tok_network_down": ("Mastercard", "5100"),
}
SANDBOX_PAYPAL_EMAIL = "sandbox-buyer@example.com"


class PaymentGateway(Protocol):
    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult: ...

    async def refund(
        self, *, amount: Decimal, currency: str, charge_reference: str, idempotency_key: str
    ) -> ChargeResult: ...

    async def describe(self, *, token: str) -> TokenDescription:
        """What ``token`` stands for; ``InvalidToken`` when the gateway does not know it."""
        ...


@dataclass
class SandboxGateway:
    """One sandbox adapter; ``name`` is the method it stands for (card or PayPal)."""

    name: str
    decline_reason: str
    results: dict[str, ChargeResult] = field(default_factory=dict)
    charges: list[tuple[str, Decimal, str]] = field(default_factory=list)  # key, amount, currency
    refunds: list[tuple[str, Decimal, str]] = field(default_factory=list)
    _flaky_seen: set[str] = field(default_factory=set)

    def _failure(self, token: str) -> str | None:
        return {
            "tok_decline": self.decline_reason,
            "tok_insufficient_funds": "insufficient_funds",
        }.get(token)

    def _network(self, token: str, key: str) -> None:
        if token == "tok_network_down":  # noqa: S105
            raise GatewayUnavailable(f"{self.name} sandbox: network down")
        if token == "tok_network_error" and key not in self._flaky_seen:  # noqa: S105
            self._flaky_seen.add(key)
            raise GatewayUnavailable(f"{self.name} sandbox: connection reset")

    def _reference(self, key: str) -> str:
        return f"{self.name}_{uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:16]}"

    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        if idempotency_key in self.results:
            return self.results[idempotency_key]
        self._network(token, idempotency_key)
        reason = self._failure(token)
        result = ChargeResult(reason is None, self._reference(idempotency_key), reason)
        self.results[idempotency_key] = result
        self.charges.append((idempotency_key, amount, currency))
        return result

    async def refund(
        self, *, amount: Decimal, currency: str, charge_reference: str, idempotency_key: str
    ) -> ChargeResult:
        if idempotency_key in self.results:
            return self.results[idempotency_key]
        result = ChargeResult(True, self._reference(idempotency_key))
        self.results[idempotency_key] = result
        self.refunds.append((idempotency_key, amount, currency))
        return result

    async def describe(self, *, token: str) -> TokenDescription:
        if token not in SANDBOX_CARDS:
            raise InvalidToken(f"{self.name} sandbox: unknown token")
        if self.name == "paypal":
            return TokenDescription(f"PayPal {SANDBOX_PAYPAL_EMAIL}")
        brand, last_four = SANDBOX_CARDS[token]
        return TokenDescription(f"{brand} **** {last_four}")


class RetryingGateway:
    """Retries transient errors a few times with a short backoff (the key keeps it safe)."""

    def __init__(self, inner: PaymentGateway, attempts: int = 3, backoff: float = 0.05) -> None:
        self.inner = inner
        self.attempts = attempts
        self.backoff = backoff

    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.inner.charge(
                    amount=amount, currency=currency, token=token, idempotency_key=idempotency_key
                )
            except GatewayUnavailable:
                if attempt == self.attempts:
                    raise
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def refund(
        self, *, amount: Decimal, currency: str, charge_reference: str, idempotency_key: str
    ) -> ChargeResult:
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.inner.refund(
                    amount=amount,
                    currency=currency,
                    charge_reference=charge_reference,
                    idempotency_key=idempotency_key,
                )
            except GatewayUnavailable:
                if attempt == self.attempts:
                    raise
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def describe(self, *, token: str) -> TokenDescription:
        return await self.inner.describe(token=token)


GATEWAY_CALLS = Counter(
    "platform_gateway_calls_total",
    "Payment gateway calls by method, operation (charge, refund) and outcome (succeeded, "
    "declined, unavailable).",
    ["method", "operation", "outcome"],
)


@dataclass
class CountedGateway:
    """Counts every call's outcome (``platform_gateway_calls_total``), whatever the adapter."""

    method: str
    inner: PaymentGateway

    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        return await self._counted(
            "charge",
            self.inner.charge(
                amount=amount, currency=currency, token=token, idempotency_key=idempotency_key
            ),
        )

    async def refund(
        self, *, amount: Decimal, currency: str, charge_reference: str, idempotency_key: str
    ) -> ChargeResult:
        return await self._counted(
            "refund",
            self.inner.refund(
                amount=amount,
                currency=currency,
                charge_reference=charge_reference,
                idempotency_key=idempotency_key,
            ),
        )

    async def describe(self, *, token: str) -> TokenDescription:
        return await self.inner.describe(token=token)

    async def _counted(self, operation: str, call: Awaitable[ChargeResult]) -> ChargeResult:
        with tracing.span(
            "invoicing",
            f"gateway {operation}",
            kind=tracing.CLIENT,
            attributes={"platform.payment_method": self.method},
        ) as span:
            try:
                result = await call
            except GatewayUnavailable:
                GATEWAY_CALLS.labels(self.method, operation, "unavailable").inc()
                span.set_attribute("platform.outcome", "unavailable")
                raise
            outcome = "succeeded" if result.succeeded else "declined"
            GATEWAY_CALLS.labels(self.method, operation, outcome).inc()
            span.set_attribute("platform.outcome", outcome)
            return result


CARD_SANDBOX = SandboxGateway("card", "card_declined")
PAYPAL_SANDBOX = SandboxGateway("paypal", "paypal_declined")
GATEWAYS: dict[PaymentMethod, PaymentGateway] = {
    "card": CountedGateway("card", RetryingGateway(CARD_SANDBOX)),
    "paypal": CountedGateway("paypal", RetryingGateway(PAYPAL_SANDBOX)),
}


def gateway_for(method: PaymentMethod) -> PaymentGateway:
    if method not in GATEWAYS:
        raise ValueError(f"{method} is not paid through a gateway")
    return GATEWAYS[method]
