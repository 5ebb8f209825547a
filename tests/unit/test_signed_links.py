"""Issue 15: the signed, expiring links a mail carries to an invoice's or credit note's PDF
(shared/signed_links.py): valid until they expire, refused once expired or tampered with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.config import DEVELOPMENT_JWT_SECRET, Settings
from shared.signed_links import (
    DEFAULT_LIFETIME,
    DocumentLinks,
    LinkRefused,
    key_from,
    link_key,
    sign,
    verify,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
KEY = link_key("a-test-secret-that-is-long-enough-0123456789")
DOC = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


def parts(url: str) -> tuple[str, int, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path, int(query["expires"][0]), query["signature"][0]


def test_a_link_names_one_document_and_opens_it_until_it_expires() -> None:
    links = DocumentLinks("https://billing.example/", KEY)
    url = links.url("invoice", DOC, NOW)
    path, expires, signature = parts(url)
    assert url.startswith(f"https://billing.example/v1/documents/invoice/{DOC}.pdf?")
    assert path == f"/v1/documents/invoice/{DOC}.pdf"
    assert expires == int((NOW + DEFAULT_LIFETIME).timestamp()) and DEFAULT_LIFETIME.days == 30
    verify(KEY, "invoice", DOC, expires, signature, NOW)  # valid now
    verify(KEY, "invoice", DOC, expires, signature, NOW + timedelta(days=29, hours=23))


def test_an_expired_link_is_refused_as_expired() -> None:
    url = DocumentLinks("https://b", KEY, timedelta(days=30)).url("credit-note", DOC, NOW)
    _, expires, signature = parts(url)
    with pytest.raises(LinkRefused) as refused:
        verify(KEY, "credit-note", DOC, expires, signature, NOW + timedelta(days=30))
    assert refused.value.reason == "expired"


@pytest.mark.parametrize(
    "change",
    ["document", "kind", "expiry", "signature", "key", "empty", "non-ascii"],
)
def test_a_tampered_link_is_refused(change: str) -> None:
    """Another document, kind, a later expiry, an altered signature or another key: refused as
    tampered (the expiry is signed, so it cannot be stretched)."""
    url = DocumentLinks("https://b", KEY).url("invoice", DOC, NOW)
    _, expires, signature = parts(url)
    kind, doc, key = "invoice", DOC, KEY
    if change == "document":
        doc = uuid.uuid4()
    elif change == "kind":
        kind = "credit-note"
    elif change == "expiry":
        expires += 86400
    elif change == "signature":
        signature = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    elif change == "key":
        key = link_key("another-secret-that-is-long-enough-01234567")
    elif change == "empty":
        signature = ""
    else:
        signature = "ø" * 43
    with pytest.raises(LinkRefused) as refused:
        verify(key, kind, doc, expires, signature, NOW)
    assert refused.value.reason == "tampered"


def test_a_tampered_expired_link_says_tampered_not_expired() -> None:
    _, expires, signature = parts(DocumentLinks("https://b", KEY).url("invoice", DOC, NOW))
    with pytest.raises(LinkRefused) as refused:
        verify(KEY, "invoice", DOC, expires - 1, signature, NOW + timedelta(days=60))
    assert refused.value.reason == "tampered"


def test_the_key_is_separated_from_the_jwt_secret_by_a_label() -> None:
    """Without a link secret of its own the key derives from the JWT secret under its own label:
    never the JWT secret itself, and a signature made with the raw JWT secret is refused."""
    settings = Settings(jwt_secret=DEVELOPMENT_JWT_SECRET)
    key = key_from(settings)
    raw = DEVELOPMENT_JWT_SECRET.encode()
    assert key != raw and key == link_key(DEVELOPMENT_JWT_SECRET)
    expires = int((NOW + timedelta(days=1)).timestamp())
    forged = sign(raw, "invoice", DOC, expires)
    with pytest.raises(LinkRefused):
        verify(key, "invoice", DOC, expires, forged, NOW)
    own = Settings(document_link_secret="its-own-link-secret-0123456789abcdef")
    assert key_from(own) == link_key("its-own-link-secret-0123456789abcdef") != key


def test_the_signature_is_hmac_sha256_over_kind_id_and_expiry() -> None:
    expected = hmac.new(KEY, f"invoice\n{DOC}\n1800000000".encode(), hashlib.sha256).digest()

    assert sign(KEY, "invoice", DOC, 1800000000) == (
        base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
    )


def test_the_lifetime_and_base_url_come_from_the_settings() -> None:
    settings = Settings(invoicing_public_url="https://billing.example", document_link_days=7)
    links = DocumentLinks.of(settings)
    assert links.lifetime == timedelta(days=7) and links.base_url == "https://billing.example"


def test_a_short_link_secret_is_refused_at_start_up() -> None:
    strong = "x" * 40
    assert Settings(jwt_secret=strong, document_link_secret="short").refusal() is not None
    assert Settings(jwt_secret=strong, document_link_secret="y" * 32).refusal() is None
    assert Settings(jwt_secret=strong).refusal() is None
