"""Signed, expiring links to a document (issue 15): a mail links an invoice's or a credit note's
PDF so that a browser opens it without a bearer token.

A link names the document kind, its id and an expiry (Unix seconds); its signature is an
HMAC-SHA256 over those three with a key used for nothing else: HMAC(secret,
``DOMAIN_LABEL``), where the secret is ``PLATFORM_DOCUMENT_LINK_SECRET``, else the JWT secret.
The label separates the two uses, so a link's signature can never serve as a token's or the
other way round. Verification checks the signature first (constant-time compare), then the
expiry: a link whose expiry was changed is tampered with (403), a genuine one past its expiry
has expired (410). A link opens one document and nothing else.

Expiry is real (wall-clock) time on both sides: the reader opens the link in real time, whatever
test clock the account follows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from shared.config import Settings

DocumentKind = Literal["invoice", "credit-note"]
KINDS: tuple[DocumentKind, ...] = ("invoice", "credit-note")
DOMAIN_LABEL = b"subscription-platform/document-links/v1"
DEFAULT_LIFETIME = timedelta(days=30)


class LinkRefused(Exception):
    """The link does not open its document: ``reason`` is ``expired`` or ``tampered``."""

    def __init__(self, reason: Literal["expired", "tampered"]) -> None:
        super().__init__(reason)
        self.reason = reason


def link_key(secret: str) -> bytes:
    """The key links are signed with: derived from ``secret`` under the links' own label."""
    return hmac.new(secret.encode("utf-8"), DOMAIN_LABEL, hashlib.sha256).digest()


def key_from(settings: Settings) -> bytes:
    own = settings.document_link_secret
    secret = own.get_secret_value() if own else settings.jwt_secret.get_secret_value()
    return link_key(secret)


def sign(key: bytes, kind: str, document_id: uuid.UUID, expires: int) -> str:
    """The signature of (kind, id, expiry): URL-safe base64 of HMAC-SHA256, unpadded."""
    message = f"{kind}\n{document_id}\n{expires}".encode("ascii")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(
    key: bytes, kind: str, document_id: uuid.UUID, expires: int, signature: str, now: datetime
) -> None:
    """``LinkRefused("tampered")`` unless the signature is this link's (compared in constant
    time), ``LinkRefused("expired")`` once ``now`` has reached the expiry."""
    expected = sign(key, kind, document_id, expires).encode("ascii")
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        raise LinkRefused("tampered")
    if now.timestamp() >= expires:
        raise LinkRefused("expired")


def document_path(kind: str, document_id: uuid.UUID) -> str:
    return f"/v1/documents/{kind}/{document_id}.pdf"


@dataclass(frozen=True)
class DocumentLinks:
    """Makes the links a mail carries: ``base_url`` is invoicing as readers reach it
    (``PLATFORM_INVOICING_PUBLIC_URL``)."""

    base_url: str
    key: bytes
    lifetime: timedelta = DEFAULT_LIFETIME
    # The portal as readers reach it (``PLATFORM_PORTAL_PUBLIC_URL``): an invoice's page there
    # asks the reader to sign in, so its link is not signed. None: mails carry no such link.
    portal_url: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> DocumentLinks:
        return cls(
            settings.invoicing_public_url,
            key_from(settings),
            timedelta(days=settings.document_link_days),
            settings.portal_public_url,
        )

    def url(self, kind: DocumentKind, document_id: uuid.UUID, now: datetime) -> str:
        expires = int((now + self.lifetime).timestamp())
        query = urlencode(
            {"expires": expires, "signature": sign(self.key, kind, document_id, expires)}
        )
        return f"{self.base_url.rstrip('/')}{document_path(kind, document_id)}?{query}"

    def invoice_page(self, invoice_id: uuid.UUID) -> str | None:
        """The invoice's page in the portal (issue 15 [links]): signed-out readers sign in first
        and come back to it."""
        if not self.portal_url:
            return None
        return f"{self.portal_url.rstrip('/')}/invoices/{invoice_id}"
