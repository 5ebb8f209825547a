"""The portal without a browser or services (issue 16): its session cookie, its CSRF check, its
texts in both languages, and refusals shown in words, never a trace. The services are replaced
by ``httpx.MockTransport`` answering what they answer (problem documents included)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from services.portal import session as cookies
from services.portal.app import create_app
from services.portal.config import PortalSettings
from services.portal.platform import Platform
from services.portal.texts import TEXTS, WORDS
from shared.auth import issue_token
from shared.config import Settings
from shared.time.clock import SystemClock

KEY = b"k" * 32
ACCOUNT = str(uuid.uuid4())
Handler = Callable[[httpx.Request], httpx.Response]


def settings() -> PortalSettings:
    return PortalSettings(development_mode=True)


def problem(status: int, slug: str, title: str, detail: str) -> httpx.Response:
    body = {"type": f"urn:subscription-platform:problem:{slug}", "title": title, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def portal(handler: Handler) -> TestClient:
    config = settings()
    app = create_app(config, Platform(config, transport=httpx.MockTransport(handler)))
    return TestClient(app, raise_server_exceptions=False)


def signed_in(client: TestClient, kind: cookies.Kind = "user") -> None:
    me = cookies.Session(
        kind=kind,
        subject=str(uuid.uuid4()),
        token="bearer-of-kari",
        expires=int(time.time()) + 600,
        account_id=ACCOUNT if kind == "user" else None,
        time_zone="Europe/Oslo",
        email="kari@example.com",
    )
    client.cookies.set(cookies.SESSION_COOKIE, cookies.seal(settings().session_key, me))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the form carries no CSRF token"
    return found.group(1)


# --- the session cookie and CSRF -----------------------------------------------------------------


def test_a_session_cookie_reads_back_only_unchanged_and_unexpired() -> None:
    me = cookies.Session("user", "u", "t", expires=2_000, account_id="a")
    sealed = cookies.seal(KEY, me)
    assert cookies.unseal(KEY, sealed, now=1_000) == me
    assert cookies.unseal(KEY, sealed, now=2_000) is None  # expired with its bearer token
    assert cookies.unseal(b"x" * 32, sealed, now=1_000) is None  # another key
    body, mac = sealed.rsplit(".", 1)
    forged = json.dumps({**me.__dict__, "kind": "operator"}).encode()
    assert cookies.unseal(KEY, f"{cookies._b64(forged)}.{mac}", now=1_000) is None
    assert cookies.unseal(KEY, "not-a-cookie", now=1_000) is None
    assert cookies.unseal(KEY, f"{body}!.{mac}", now=1_000) is None


def test_csrf_tokens_belong_to_their_nonce_and_key() -> None:
    nonce = cookies.new_csrf_nonce()
    token = cookies.csrf_token(KEY, nonce)
    assert cookies.csrf_ok(KEY, nonce, token)
    assert not cookies.csrf_ok(KEY, cookies.new_csrf_nonce(), token)
    assert not cookies.csrf_ok(b"x" * 32, nonce, token)
    assert not cookies.csrf_ok(KEY, nonce, None)


def test_a_form_posted_without_its_csrf_token_does_nothing() -> None:
    calls: list[httpx.Request] = []

    def services(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(202, json={"detail": "on its way"})

    client = portal(services)
    page = client.get("/sign-in")
    assert page.status_code == 200
    refused = client.post("/sign-in", data={"email": "kari@example.com", "csrf": "forged"})
    assert refused.status_code == 400 and "The form has expired" in refused.text
    assert calls == []
    sent = client.post(
        "/sign-in", data={"email": "kari@example.com", "csrf": csrf_of(page.text), "key": "k1"}
    )
    assert sent.status_code == 200 and "Check your mail" in sent.text
    [call] = calls
    assert (call.url.path, call.headers["Idempotency-Key"]) == ("/v1/sign-in-links", "k1")


def test_cookies_are_http_only_lax_and_secure_over_https() -> None:
    client = portal(lambda request: httpx.Response(404))
    set_cookie = client.get("/sign-in").headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
    assert "Secure" not in set_cookie  # http://127.0.0.1 in development
    assert PortalSettings(portal_public_url="https://portal.example").secure_cookies


# --- pages: R8 refusals in words, never a trace ---------------------------------------------------


def test_a_member_without_the_role_reads_the_refusal_in_words() -> None:
    """R8: invoicing answers 403 to a secondary admin; the page says so in the problem's words."""

    def services(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer bearer-of-kari"
        return problem(403, "role-required", "Your role does not allow this", "Only buyer (R8).")

    client = portal(services)
    signed_in(client)
    page = client.get("/invoices")
    assert page.status_code == 403
    assert "Invoices and credit notes" in page.text
    assert "Your role does not allow this" in page.text and "Only buyer (R8)." in page.text
    client.cookies.set("portal_language", "nb")
    norsk = client.get("/invoices")
    assert "Fakturaer og kreditnotaer" in norsk.text
    assert "Rollen din gir ikke tilgang til dette" in norsk.text


def test_an_unexpected_failure_is_a_sentence_not_a_trace() -> None:
    def services(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": "shape"})  # a KeyError in the page

    client = portal(services)
    signed_in(client)
    page = client.get("/subscriptions")
    assert page.status_code == 500
    assert "Something went wrong on our side" in page.text
    assert "Traceback" not in page.text and "KeyError" not in page.text


def test_a_service_that_does_not_answer_is_said_so() -> None:
    def services(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = portal(services)
    signed_in(client)
    page = client.get("/subscriptions")
    assert page.status_code == 503 and "A service did not answer" in page.text


def test_no_session_or_an_ended_one_goes_to_sign_in() -> None:
    client = portal(lambda request: problem(401, "unauthorized", "Authentication required", ""))
    first = client.get("/invoices", follow_redirects=False)
    assert (first.status_code, first.headers["location"]) == (303, "/sign-in")
    signed_in(client)
    ended = client.get("/invoices", follow_redirects=False)  # the services say 401
    assert (ended.status_code, ended.headers["location"]) == (303, "/sign-in?done=session_ended")
    operator_page = client.get("/operator", follow_redirects=False)
    assert operator_page.headers["location"].startswith("/operator/sign-in")


def test_only_an_operator_token_signs_in_an_operator() -> None:
    client = portal(lambda request: httpx.Response(404))
    page = client.get("/operator/sign-in")
    config = Settings(development_mode=True)
    user = issue_token(config, SystemClock(), subject=uuid.uuid4())
    refused = client.post("/operator/sign-in", data={"token": user, "csrf": csrf_of(page.text)})
    assert refused.status_code == 403 and "Not an operator" in refused.text
    operator = issue_token(config, SystemClock(), subject=uuid.uuid4(), kind="operator")
    signed = client.post(
        "/operator/sign-in",
        data={"token": operator, "csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert (signed.status_code, signed.headers["location"]) == (303, "/operator")


def test_language_choice_redirects_only_within_the_portal() -> None:
    client = portal(lambda request: httpx.Response(404))
    away = client.get("/language/nb?next=//evil.example/x", follow_redirects=False)
    assert away.headers["location"] == "/"
    page = client.get("/sign-in")
    assert '<html lang="nb">' in page.text and "Logg inn" in page.text


# --- texts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [TEXTS, WORDS], ids=["texts", "words"])
def test_every_phrase_is_in_both_languages(table: dict[str, dict[str, str]]) -> None:
    assert set(table["en"]) == set(table["nb"])
    assert all(table["nb"][key] for key in table["nb"])
