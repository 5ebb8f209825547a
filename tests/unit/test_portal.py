"""The portal without a browser or services (issue 16): its session cookie, its CSRF check, its
texts in both languages, and refusals shown in words, never a trace. The services are replaced
by ``httpx.MockTransport`` answering what they answer (problem documents included)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from services.portal import session as cookies
from services.portal.app import create_app
from services.portal.config import PortalSettings
from services.portal.platform import Platform
from services.portal.session import safe_next
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
    assert (first.status_code, first.headers["location"]) == (303, "/sign-in?next=%2Finvoices")
    signed_in(client)
    ended = client.get("/invoices", follow_redirects=False)  # the services say 401
    assert (ended.status_code, ended.headers["location"]) == (
        303,
        "/sign-in?done=session_ended&next=%2Finvoices",
    )
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
    # A sign-in page is a place to switch language on, its ``next`` kept (issue 15 [links]).
    signing_in = "/sign-in?next=%2Finvoices%2F1"
    found = re.search(r'href="(/language/nb\?next=[^"]+)"', client.get(signing_in).text)
    assert found, "no language link"
    back = client.get(found.group(1).replace("&amp;", "&"), follow_redirects=False)
    assert back.headers["location"] == signing_in
    page = client.get("/sign-in")
    assert '<html lang="nb">' in page.text and "Logg inn" in page.text


# --- back to the page asked for after sign-in (issue 15 [links]) ---------------------------------

INVOICE_ID = str(uuid.uuid4())
INVOICE = {
    "id": INVOICE_ID,
    "invoice_number": "INV-0000042",
    "account_id": ACCOUNT,
    "purpose": "order",
    "installment": None,
    "currency": "NOK",
    "payment_method": "invoice",
    "status": "issued",
    "tax_exempt_reason": None,
    "issued_at": "2026-06-01T08:00:00Z",
    "due_date": "2026-07-01",
    "paid_at": None,
    "po_number": "PO-7",
    "net_total": "2000.00",
    "vat_total": "500.00",
    "gross_total": "2500.00",
    "lines": [
        {
            "description": "AutoCAD, annual, 2 seats",
            "quantity": 2,
            "unit_price": "1000.00",
            "net_amount": "2000.00",
            "vat_rate": "25",  # percent, as invoicing answers it
            "vat_amount": "500.00",
        }
    ],
}


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/invoices",
        "//evil.example/invoices",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",  # a browser drops the tab: //evil.example
        "/\n/evil.example",
        "/ /evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "invoices",
        "/sign-in/abc",  # the sign-in pages themselves: no loop
        "/sign-in?next=/invoices",
        "/sign-out",
        "/fakturaer/\u00e6",
        "/" + "x" * 3000,
        "",
        None,
    ],
)
def test_an_open_redirect_is_refused(target: str | None) -> None:
    """Only a same-site relative path is a place to return to; anything else is the start."""
    assert safe_next(target) == "/"


@pytest.mark.parametrize(
    "target", [f"/invoices/{INVOICE_ID}", "/invoices?done=paid_ok", "/operator/clocks/abc"]
)
def test_a_path_of_the_portal_is_a_place_to_return_to(target: str) -> None:
    assert safe_next(target) == target


def token_for(user: uuid.UUID) -> str:
    return issue_token(Settings(development_mode=True), SystemClock(), subject=user)


def services_for_kari(calls: list[httpx.Request]) -> Handler:
    """Ordering mints and redeems sign-in links; invoicing answers Kari's invoice (R8: a
    stranger's id is 404)."""

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        path = request.url.path
        if path == "/v1/sign-in-links":
            return httpx.Response(202, json={"detail": "on its way"})
        if path == "/v1/sign-in-links/redemption":
            user = uuid.uuid4()
            return httpx.Response(
                200,
                json={
                    "user_id": str(user),
                    "token": token_for(user),
                    "account_id": ACCOUNT,
                    "account_name": "Fjord Arkitekter AS",
                    "time_zone": "Europe/Oslo",
                    "name": "Kari",
                    "email": "kari@example.com",
                    "language": "en",
                },
            )
        if path == f"/v1/invoices/{INVOICE_ID}":
            return httpx.Response(200, json=INVOICE)
        if path == f"/v1/accounts/{ACCOUNT}/payment-methods":
            return httpx.Response(200, json={"items": []})
        return problem(404, "not-found", "Not found", "No such invoice on your accounts.")

    return answer


def test_a_signed_out_visit_returns_to_its_page_through_the_mailed_link() -> None:
    """The invoice mail's portal link, opened signed out: to sign-in with the page as ``next``,
    kept by this browser while the link is mailed, and the link's use lands on the page."""
    calls: list[httpx.Request] = []
    client = portal(services_for_kari(calls))
    page = f"/invoices/{INVOICE_ID}"
    away = client.get(page, follow_redirects=False)
    assert (away.status_code, away.headers["location"]) == (
        303,
        f"/sign-in?next=%2Finvoices%2F{INVOICE_ID}",
    )
    assert calls == []  # nothing asked of the services without a session

    form = client.get(away.headers["location"])
    assert f'name="next" value="{page}"' in form.text
    assert "you return to it once signed in" in form.text
    sent = client.post(
        "/sign-in",
        data={"email": "kari@example.com", "csrf": csrf_of(form.text), "key": "k", "next": page},
    )
    assert sent.status_code == 200 and "Check your mail" in sent.text
    assert client.cookies.get(cookies.NEXT_COOKIE) == quote(page, safe="")
    assert "max-age=1800" in sent.headers["set-cookie"].lower()

    confirm = client.get("/sign-in/the-mailed-secret")  # the link from the mail
    used = client.post(
        "/sign-in/the-mailed-secret", data={"csrf": csrf_of(confirm.text)}, follow_redirects=False
    )
    assert (used.status_code, used.headers["location"]) == (303, page)
    assert client.cookies.get(cookies.NEXT_COOKIE) is None  # read once

    shown = client.get(used.headers["location"])
    assert shown.status_code == 200
    assert "Invoice INV-0000042" in shown.text
    assert "AutoCAD, annual, 2 seats" in shown.text and "25%" in shown.text
    assert "NOK\xa02,500.00" in shown.text and "NOK\xa0500.00" in shown.text  # as on invoices
    assert f'href="/invoices/{INVOICE_ID}.pdf"' in shown.text
    assert f'action="/invoices/{INVOICE_ID}/payment"' in shown.text  # open: the Pay form
    assert 'name="from" value="invoice"' in shown.text
    [invoice_call] = [c for c in calls if c.url.path == f"/v1/invoices/{INVOICE_ID}"]
    assert invoice_call.headers["Authorization"].startswith("Bearer ey")


def test_an_open_redirect_through_sign_in_is_refused() -> None:
    """A ``next`` to another site is never kept, and a planted cookie is never followed: the
    person lands on the start page."""
    client = portal(services_for_kari([]))
    form = client.get("/sign-in?next=//evil.example/phish")
    assert 'name="next"' not in form.text
    client.post(
        "/sign-in",
        data={"email": "kari@example.com", "csrf": csrf_of(form.text), "next": "//evil.example"},
    )
    assert client.cookies.get(cookies.NEXT_COOKIE) is None
    client.cookies.set(cookies.NEXT_COOKIE, "https://evil.example/phish")
    confirm = client.get("/sign-in/the-mailed-secret")
    used = client.post(
        "/sign-in/the-mailed-secret", data={"csrf": csrf_of(confirm.text)}, follow_redirects=False
    )
    assert used.headers["location"] == "/subscriptions"
    operator = client.get("/operator/sign-in?next=https://evil.example")
    assert 'name="next"' not in operator.text


def test_the_invoice_page_of_a_stranger_or_no_invoice_is_refused_in_words() -> None:
    """R8: invoicing answers 404 to an invoice not of the person's account; a malformed id is
    no invoice; both in words, in Norwegian too."""
    calls: list[httpx.Request] = []
    client = portal(services_for_kari(calls))
    signed_in(client)
    stranger = client.get(f"/invoices/{uuid.uuid4()}")
    assert stranger.status_code == 404 and "No such invoice on your accounts." in stranger.text
    malformed = client.get("/invoices/..%2f..%2fv1%2foperator")
    assert malformed.status_code == 404 and "Traceback" not in malformed.text
    assert all("operator" not in c.url.path for c in calls)
    client.cookies.set("portal_language", "nb")
    norsk = client.get(f"/invoices/{INVOICE_ID}")
    assert "Faktura INV-0000042" in norsk.text and "25\xa0%" in norsk.text
    assert "2\xa0500,00\xa0kr" in norsk.text and "Betal" in norsk.text


# --- texts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [TEXTS, WORDS], ids=["texts", "words"])
def test_every_phrase_is_in_both_languages(table: dict[str, dict[str, str]]) -> None:
    assert set(table["en"]) == set(table["nb"])
    assert all(table["nb"][key] for key in table["nb"])
