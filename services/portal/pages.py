"""The portal's pages: sign-in, the customer's pages, the operator's pages.

Each handler asks the services (as the signed-in person) and draws a template; each form
handler checks the CSRF token, sends one write with the form's Idempotency-Key and redirects
back (303) with a word of what happened. What a person may see and do is the services' answer
(R8), not a guess here: a 403 or 404 becomes the problem's title and detail on the page.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from .platform import Refused, Unavailable
from .session import NEXT_COOKIE, NEXT_MAX_AGE, SESSION_COOKIE, Session, safe_next
from .texts import language_of

if TYPE_CHECKING:
    from .app import Portal


SERVICES = ("ordering", "invoicing", "lifecycle", "notifications")


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def uuid_or_none(value: str | None) -> str | None:
    try:
        return str(uuid.UUID(value or ""))
    except ValueError:
        return None


def returning_to(target: str | None) -> str:
    """A page to return to after sign-in, or "" (none asked for, or not a path of this site:
    ``session.safe_next`` refuses other hosts, so no open redirect)."""
    safe = safe_next(target)
    return "" if safe == "/" else safe


def field_problem(field: str, detail: str) -> Refused:
    return Refused(
        422, "The form is not valid", detail, errors=[{"field": field, "message": detail}]
    )


def install(app: FastAPI, portal: Portal) -> None:
    api = portal.platform

    # --- sign-in ---------------------------------------------------------------------------

    @app.get("/")
    async def home(request: Request) -> Response:
        session = portal.session(request)
        if session is None:
            return redirect("/sign-in")
        return redirect("/operator" if session.kind == "operator" else "/subscriptions")

    @app.get("/sign-in")
    async def sign_in_form(request: Request, next: str = "") -> Response:
        return portal.render(request, "sign_in.html.j2", next=returning_to(next))

    @app.post("/sign-in")
    async def send_link(request: Request) -> Response:
        form = await portal.form(request)
        email = form.get("email", "").strip()
        if "@" not in email or len(email) > 254:
            raise field_problem("email", "Enter an e-mail address such as kari@example.com.")
        await api.send(
            "ordering", "POST", "/v1/sign-in-links", None, {"email": email}, form.get("key")
        )
        response = portal.render(request, "link_sent.html.j2")
        # The mailed link knows nothing of the page asked for: this browser keeps it, and
        # using the link here returns there (a link opened elsewhere lands on the start page).
        target = returning_to(form.get("next"))
        if target:
            portal.set_cookie(response, NEXT_COOKIE, quote(target, safe=""), NEXT_MAX_AGE)
        else:
            response.delete_cookie(NEXT_COOKIE, path="/")
        return response

    @app.get("/sign-in/{secret}")
    async def confirm_link(request: Request, secret: str) -> Response:
        # A GET never uses the link: mail scanners that open links must not spend it.
        return portal.render(request, "confirm_link.html.j2", secret=secret)

    @app.post("/sign-in/{secret}")
    async def use_link(request: Request, secret: str) -> Response:
        await portal.form(request)
        request.state.heading = "confirm_sign_in"
        signed = await api.send(
            "ordering", "POST", "/v1/sign-in-links/redemption", None, {"secret": secret}
        )
        now = time.time()
        session = Session(
            kind="user",
            subject=signed["user_id"],
            token=signed["token"],
            expires=int(now) + 3600,
            account_id=signed["account_id"],
            account_name=signed["account_name"],
            time_zone=signed["time_zone"],
            name=signed["name"],
            email=signed["email"],
            language=language_of(signed["language"]),
        )
        session = expiring_with_token(session)
        asked = unquote(request.cookies.get(NEXT_COOKIE, ""))
        response = redirect(returning_to(asked) or "/subscriptions")
        response.delete_cookie(NEXT_COOKIE, path="/")
        portal.sign_in(response, session, now)
        return response

    @app.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        await portal.form(request)
        response = redirect("/sign-in?done=signed_out")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/operator/sign-in")
    async def operator_sign_in_form(request: Request, next: str = "") -> Response:
        return portal.render(request, "operator_sign_in.html.j2", next=returning_to(next))

    @app.post("/operator/sign-in")
    async def operator_sign_in(request: Request) -> Response:
        form = await portal.form(request)
        session = portal.operator_session(form.get("token", "").strip(), portal.language(request))
        if session is None:
            raise Refused(403, "Not an operator's token", "Paste a valid token of kind operator.")
        response = redirect(returning_to(form.get("next")) or "/operator")
        portal.sign_in(response, session, time.time())
        return response

    # --- subscriptions and contracts ----------------------------------------------------------

    @app.get("/subscriptions")
    async def subscriptions(request: Request) -> Response:
        me = portal.user(request)
        request.state.heading = "subscriptions"
        listed = await api.get("lifecycle", f"/v1/accounts/{me.account_id}/subscriptions", me.token)
        methods = await optional(
            api.get("invoicing", f"/v1/accounts/{me.account_id}/payment-methods", me.token)
        )
        return portal.render(
            request,
            "subscriptions.html.j2",
            subscriptions=listed["items"],
            methods=(methods or {}).get("items", []),
        )

    @app.post("/subscriptions/{subscription_id}/auto-renew")
    async def auto_renew(request: Request, subscription_id: uuid.UUID) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "subscriptions"
        body = {"auto_renew": form.get("auto_renew") == "on"}
        path = f"/v1/subscriptions/{subscription_id}/auto-renew"
        await api.send("ordering", "PUT", path, me.token, body, form.get("key"))
        await settled(api, me, subscription_id, lambda s: s.get("auto_renew") == body["auto_renew"])
        return redirect("/subscriptions?done=saved")

    @app.post("/subscriptions/{subscription_id}/renewal")
    async def renew(request: Request, subscription_id: uuid.UUID) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "subscriptions"
        path = f"/v1/subscriptions/{subscription_id}/renewals"
        await api.send("ordering", "POST", path, me.token, {}, form.get("key"))
        return redirect("/subscriptions?done=saved")

    @app.post("/subscriptions/{subscription_id}/payment-method")
    async def renewal_method(request: Request, subscription_id: uuid.UUID) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "payment_center"
        chosen = form.get("method", "")
        body: dict[str, Any] = {"payment_method": "invoice"}
        if chosen != "invoice":
            method_id = uuid_or_none(chosen)
            if method_id is None:
                raise field_problem("method", "Choose a saved payment method or invoice.")
            methods = await api.get(
                "invoicing", f"/v1/accounts/{me.account_id}/payment-methods", me.token
            )
            kind = next((m["type"] for m in methods["items"] if m["id"] == method_id), None)
            if kind is None:
                raise field_problem("method", "That payment method is not saved on the account.")
            body = {"payment_method": kind, "payment_method_id": method_id}
        path = f"/v1/subscriptions/{subscription_id}/payment-method"
        await api.send("ordering", "PUT", path, me.token, body, form.get("key"))
        return redirect("/payment-center?done=saved")

    @app.post("/subscriptions/{subscription_id}/actions/{action}")
    async def subscription_action(
        request: Request, subscription_id: uuid.UUID, action: str
    ) -> Response:
        """Term change (R28), product switch (R29), added seats (R30), the renewal's PO details
        (R22) and a refund (R38): the service judges each and says why not in words."""
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "subscriptions"
        if action not in SUBSCRIPTION_ACTIONS:
            raise Refused(404, "No such action")
        service, method, path, body_of = SUBSCRIPTION_ACTIONS[action]
        body = body_of(form)
        await api.send(
            service, method, path.format(id=subscription_id), me.token, body, form.get("key")
        )
        return redirect("/subscriptions?done=saved")

    @app.get("/buy")
    async def buy_form(request: Request) -> Response:
        portal.user(request)
        return portal.render(request, "buy.html.j2", offerings=offerings())

    @app.post("/buy")
    async def buy(request: Request) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "buy"
        method = form.get("payment_method", "card")
        body: dict[str, Any] = {
            "offering": form.get("offering", ""),
            "term": form.get("term", ""),
            "seats": whole_number(form, "seats"),
            "payment_method": method,
            "auto_renew": form.get("auto_renew") == "on",
        }
        if method != "invoice":
            body["payment_token"] = form.get("token", "").strip() or None
        path = f"/v1/accounts/{me.account_id}/orders"
        await api.send("ordering", "POST", path, me.token, body, form.get("key"))
        return redirect("/subscriptions?done=ordered")

    # --- invoices and credit notes -----------------------------------------------------------

    @app.get("/invoices")
    async def invoices(request: Request) -> Response:
        me = portal.user(request)
        request.state.heading = "invoices"
        listed = await api.get("invoicing", f"/v1/accounts/{me.account_id}/invoices", me.token)
        notes = await optional(
            api.get("invoicing", f"/v1/accounts/{me.account_id}/credit-notes", me.token)
        )
        methods = await optional(
            api.get("invoicing", f"/v1/accounts/{me.account_id}/payment-methods", me.token)
        )
        items = sorted(listed["items"], key=lambda i: (i["issued_at"], i["invoice_number"]))
        return portal.render(
            request,
            "invoices.html.j2",
            invoices=list(reversed(items)),
            credit_notes=(notes or {}).get("items", []),
            methods=(methods or {}).get("items", []),
        )

    @app.get("/invoices/{invoice_id}.pdf")
    async def invoice_pdf(request: Request, invoice_id: uuid.UUID) -> Response:
        return await pdf(request, f"/v1/invoices/{invoice_id}.pdf")

    @app.get("/credit-notes/{credit_note_id}.pdf")
    async def credit_note_pdf(request: Request, credit_note_id: uuid.UUID) -> Response:
        return await pdf(request, f"/v1/credit-notes/{credit_note_id}.pdf")

    async def pdf(request: Request, path: str) -> Response:
        me = portal.user(request)
        request.state.heading = "invoices"
        answer = await api.call("invoicing", "GET", path, token=me.token)
        return Response(
            answer.content,
            media_type="application/pdf",
            headers={"Content-Disposition": answer.headers.get("content-disposition", "inline")},
        )

    @app.get("/invoices/{invoice_id}")
    async def invoice_page(request: Request, invoice_id: str) -> Response:
        """One invoice (issue 15 [links]: the page an invoice mail links): its number, dates,
        status, lines with VAT, totals, PDF and, while open, the Pay form. Invoicing answers as
        for the person (R8: 404 to strangers, 403 to members without the role)."""
        me = portal.user(request)
        request.state.heading = "invoices"
        found = uuid_or_none(invoice_id)
        if found is None:
            raise Refused(404, "No such invoice", "The link is not an invoice's.", "not-found")
        invoice = await api.get("invoicing", f"/v1/invoices/{found}", me.token)
        methods: dict[str, Any] | None = None
        if invoice["status"] == "issued":
            methods = await optional(
                api.get("invoicing", f"/v1/accounts/{me.account_id}/payment-methods", me.token)
            )
        return portal.render(
            request,
            "invoice.html.j2",
            invoice=invoice,
            methods=(methods or {}).get("items", []),
        )

    @app.post("/invoices/{invoice_id}/payment")
    async def pay(request: Request, invoice_id: uuid.UUID) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "invoices"
        chosen = form.get("method", "")
        if chosen == "one-off":
            body: dict[str, Any] = {"type": "card", "payment_token": form.get("token", "").strip()}
        else:
            method_id = uuid_or_none(chosen)
            if method_id is None:
                raise field_problem("method", "Choose how to pay.")
            body = {"payment_method_id": method_id}
        path = f"/v1/invoices/{invoice_id}/payments"
        await api.send("invoicing", "POST", path, me.token, body, form.get("key"))
        back = "/invoices"
        if form.get("from") == "invoice":  # paid on the invoice's own page: back to it
            back = f"/invoices/{invoice_id}"
        return redirect(f"{back}?done=paid_ok")

    # --- the payment center ---------------------------------------------------------------

    @app.get("/payment-center")
    async def payment_center(request: Request) -> Response:
        me = portal.user(request)
        request.state.heading = "payment_center"
        methods = await api.get(
            "invoicing", f"/v1/accounts/{me.account_id}/payment-methods", me.token
        )
        listed = await optional(
            api.get("lifecycle", f"/v1/accounts/{me.account_id}/subscriptions", me.token)
        )
        return portal.render(
            request,
            "payment_center.html.j2",
            methods=methods["items"],
            subscriptions=(listed or {}).get("items", []),
        )

    @app.post("/payment-methods")
    async def add_method(request: Request) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "payment_center"
        body = {
            "type": form.get("type", "card"),
            "payment_token": form.get("token", "").strip(),
            "make_default": form.get("make_default") == "on",
        }
        path = f"/v1/accounts/{me.account_id}/payment-methods"
        await api.send("invoicing", "POST", path, me.token, body, form.get("key"))
        return redirect("/payment-center?done=saved")

    @app.post("/payment-methods/default")
    async def default_method(request: Request) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "payment_center"
        method_id = uuid_or_none(form.get("payment_method_id"))
        if method_id is None:
            raise field_problem("payment_method_id", "Choose a saved payment method.")
        path = f"/v1/accounts/{me.account_id}/default-payment-method"
        body = {"payment_method_id": method_id}
        await api.send("invoicing", "PUT", path, me.token, body, form.get("key"))
        return redirect("/payment-center?done=saved")

    # --- users and roles, the mail log -------------------------------------------------------

    @app.get("/users")
    async def users(request: Request) -> Response:
        me = portal.user(request)
        request.state.heading = "users"
        account = await api.get("ordering", f"/v1/accounts/{me.account_id}", me.token)
        roles = {p["user_id"]: p["roles"] for p in account["people"]}
        people = [
            {
                "user_id": u["id"],
                "name": u["name"],
                "email": u["email"],
                "roles": roles.get(u["id"], []),
            }
            for u in account["users"]
        ]
        return portal.render(request, "users.html.j2", account=account, people=people)

    @app.post("/users/{user_id}/{action}")
    async def user_role(request: Request, user_id: uuid.UUID, action: str) -> Response:
        """Appoint or remove a secondary admin (R4), hand over primary admin (R3)."""
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "users"
        base = f"/v1/accounts/{me.account_id}"
        calls = {
            "secondary-admin": ("POST", f"{base}/secondary-admins", {"user_id": str(user_id)}),
            "secondary-admin-removal": ("DELETE", f"{base}/secondary-admins/{user_id}", None),
            "primary-admin": ("PUT", f"{base}/primary-admin", {"user_id": str(user_id)}),
        }
        if action not in calls:
            raise Refused(404, "No such action")
        method, path, body = calls[action]
        await api.send("ordering", method, path, me.token, body, form.get("key"))
        return redirect("/users?done=saved")

    @app.post("/users")
    async def add_user(request: Request) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "users"
        body = {"email": form.get("email", "").strip(), "name": form.get("name", "").strip()}
        path = f"/v1/accounts/{me.account_id}/users"
        await api.send("ordering", "POST", path, me.token, body, form.get("key"))
        return redirect("/users?done=saved")

    @app.post("/users/payers")
    async def add_payer(request: Request) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "users"
        body = {"email": form.get("email", "").strip(), "name": form.get("name", "").strip()}
        path = f"/v1/accounts/{me.account_id}/payers"
        await api.send("ordering", "POST", path, me.token, body, form.get("key"))
        return redirect("/users?done=saved")

    @app.post("/users/payers/{user_id}/removal")
    async def remove_payer(request: Request, user_id: uuid.UUID) -> Response:
        me = portal.user(request)
        form = await portal.form(request)
        request.state.heading = "users"
        path = f"/v1/accounts/{me.account_id}/payers/{user_id}"
        await api.send("ordering", "DELETE", path, me.token, None, form.get("key"))
        return redirect("/users?done=saved")

    @app.get("/mail")
    async def mail_log(request: Request) -> Response:
        me = portal.user(request)
        request.state.heading = "mail_log"
        log = await api.get(
            "notifications", f"/v1/accounts/{me.account_id}/emails?limit=200", me.token
        )
        return portal.render(request, "mail.html.j2", mails=log["items"])

    # --- operators ------------------------------------------------------------------------

    @app.get("/operator")
    async def find_account(request: Request, account: str = "") -> Response:
        me = portal.operator(request)
        request.state.heading = "find_account"
        account_id = uuid_or_none(account)
        if account and account_id is None:
            raise field_problem("account", "An account id looks like 0b5c…-…; paste it whole.")
        found: dict[str, Any] = {}
        if account_id:
            found["account"] = await api.get("ordering", f"/v1/accounts/{account_id}", me.token)
            found["subscriptions"] = (
                await api.get("lifecycle", f"/v1/accounts/{account_id}/subscriptions", me.token)
            )["items"]
            found["invoices"] = (
                await api.get("invoicing", f"/v1/accounts/{account_id}/invoices", me.token)
            )["items"]
        return portal.render(request, "operator.html.j2", account_id=account_id or "", **found)

    @app.get("/operator/clocks")
    async def clocks(request: Request, clock: str = "") -> Response:
        portal.operator(request)
        request.state.heading = "test_clocks"
        clock_id = uuid_or_none(clock)
        if clock_id:
            return redirect(f"/operator/clocks/{clock_id}")
        return portal.render(request, "clocks.html.j2")

    @app.post("/operator/clocks")
    async def create_clock(request: Request) -> Response:
        me = portal.operator(request)
        form = await portal.form(request)
        request.state.heading = "test_clocks"
        body = {"frozen_time": form.get("frozen_time", ""), "name": form.get("name") or "portal"}
        created = await api.send("lifecycle", "POST", "/v1/test-clocks", me.token, body)
        return redirect(f"/operator/clocks/{created['id']}")

    @app.get("/operator/clocks/{clock_id}")
    async def clock_page(request: Request, clock_id: uuid.UUID, account: str = "") -> Response:
        me = portal.operator(request)
        request.state.heading = "test_clocks"
        clock = await api.get("lifecycle", f"/v1/test-clocks/{clock_id}", me.token)
        account_id = uuid_or_none(account)
        timeline: list[dict[str, Any]] = []
        subscriptions: list[dict[str, Any]] = []
        if account_id:
            subscriptions = (
                await api.get("lifecycle", f"/v1/accounts/{account_id}/subscriptions", me.token)
            )["items"]
            invoices = (
                await api.get("invoicing", f"/v1/accounts/{account_id}/invoices", me.token)
            )["items"]
            timeline = clock_timeline(subscriptions, invoices)
        zone = next((s["time_zone"] for s in subscriptions if s.get("time_zone")), None)
        return portal.render(
            request,
            "clock.html.j2",
            time_zone=zone,
            clock=clock,
            account_id=account_id or "",
            subscriptions=subscriptions,
            timeline=timeline,
        )

    @app.get("/operator/clocks/{clock_id}/status")
    async def clock_status(request: Request, clock_id: uuid.UUID) -> JSONResponse:
        me = portal.operator(request)
        clock = await api.get("lifecycle", f"/v1/test-clocks/{clock_id}", me.token)
        return JSONResponse({"status": clock["status"], "step": clock["step"], "now": clock["now"]})

    @app.post("/operator/clocks/{clock_id}/advance")
    async def advance_clock(request: Request, clock_id: uuid.UUID) -> Response:
        me = portal.operator(request)
        form = await portal.form(request)
        request.state.heading = "test_clocks"
        path = f"/v1/test-clocks/{clock_id}/advance"
        await api.send("lifecycle", "POST", path, me.token, {"to": form.get("to", "")})
        account = uuid_or_none(form.get("account"))
        return redirect(f"/operator/clocks/{clock_id}" + (f"?account={account}" if account else ""))

    @app.get("/operator/dead-letters")
    async def dead_letters(request: Request) -> Response:
        me = portal.operator(request)
        request.state.heading = "dead_letters"
        found = {}
        for service in SERVICES:
            try:
                found[service] = await api.get(
                    service, "/v1/operator/dead-letters?limit=100", me.token
                )
            except Unavailable:
                found[service] = None
        return portal.render(request, "dead_letters.html.j2", found=found)

    @app.post("/operator/dead-letters/{service}/replay")
    async def replay_dead_letters(request: Request, service: str) -> Response:
        me = portal.operator(request)
        await portal.form(request)
        request.state.heading = "dead_letters"
        if service not in SERVICES:
            raise Refused(404, "No such service")
        await api.send(service, "POST", "/v1/operator/dead-letters/replay", me.token)
        return redirect("/operator/dead-letters?done=replayed")

    @app.get("/operator/exchange-rates")
    async def exchange_rates(request: Request) -> Response:
        me = portal.operator(request)
        request.state.heading = "exchange_rates"
        rates = await api.get("invoicing", "/v1/operator/exchange-rates", me.token)
        return portal.render(request, "rates.html.j2", rates=rates)


def whole_number(form: dict[str, str], field: str) -> int:
    value = form.get(field, "").strip()
    if not value.isdigit():
        raise field_problem(field, "Enter a whole number, such as 5.")
    return int(value)


def optional_text(form: dict[str, str], field: str) -> str | None:
    return form.get(field, "").strip() or None


# action -> (service, method, path, the body from the form)
SUBSCRIPTION_ACTIONS: dict[str, tuple[str, str, str, Any]] = {
    "term-change": (
        "ordering",
        "PUT",
        "/v1/subscriptions/{id}/term-change",
        lambda form: {"new_term": optional_text(form, "term")},
    ),
    "product-switch": (
        "ordering",
        "PUT",
        "/v1/subscriptions/{id}/product-switch",
        lambda form: {"new_offering": optional_text(form, "offering")},
    ),
    "seats": (
        "ordering",
        "POST",
        "/v1/subscriptions/{id}/seats",
        lambda form: {"seats": whole_number(form, "seats")},
    ),
    "renewal-po": (
        "invoicing",
        "PUT",
        "/v1/subscriptions/{id}/renewal-purchase-order",
        lambda form: {
            "po_number": optional_text(form, "po_number"),
            "notes": optional_text(form, "notes"),
        },
    ),
    "refund": (
        "ordering",
        "POST",
        "/v1/subscriptions/{id}/refunds",
        lambda form: {"reason": form.get("reason", "").strip()},
    ),
}


def offerings() -> list[tuple[str, str, tuple[str, ...]]]:
    """What can be bought: (code, name, terms) from ordering's catalogue file [ours: static
    data shipped with the code, read as a file; ordering has no catalogue endpoint yet]."""
    from services.ordering.catalogue import catalogue

    found = catalogue().offerings.values()
    return [(o.code, o.name, tuple(o.terms)) for o in sorted(found, key=lambda o: o.name)]


def expiring_with_token(session: Session) -> Session:
    """The session lasts as long as the bearer token the services accept (its ``exp``)."""
    import jwt

    claims = jwt.decode(session.token, options={"verify_signature": False})
    return Session(**{**session.__dict__, "expires": int(claims["exp"])})


async def optional(call: Any) -> Any:
    """A part of a page the person's role may not see: left out instead of failing the page."""
    try:
        return await call
    except Refused as refusal:
        if refusal.status in (403, 404):
            return None
        raise


async def settled(api: Any, me: Session, subscription_id: uuid.UUID, done: Any) -> None:
    """A change made in ordering reaches lifecycle's view through Kafka: wait (briefly, on the
    condition) so the page drawn next shows it; the page is right either way a moment later."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sub = await api.get("lifecycle", f"/v1/subscriptions/{subscription_id}", me.token)
        except Refused:
            return
        if done(sub):
            return
        await asyncio.sleep(0.1)


def clock_timeline(
    subscriptions: list[dict[str, Any]], invoices: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What happened to the account, in its time: purchases and stage changes, invoices issued
    and paid (from the services' answers)."""
    rows: list[dict[str, Any]] = []
    for sub in subscriptions:
        if sub.get("starts_at"):
            rows.append({"at": sub["starts_at"], "subject": sub["offering"], "event": "active"})
        if sub.get("stage_changed_at"):
            event = {"at": sub["stage_changed_at"], "subject": sub["offering"]}
            rows.append({**event, "event": sub["stage"]})
    for invoice in invoices:
        number = invoice["invoice_number"]
        rows.append({"at": invoice["issued_at"], "subject": number, "event": "invoice_issued"})
        if invoice.get("paid_at"):
            rows.append({"at": invoice["paid_at"], "subject": number, "event": "invoice_paid"})
    return sorted(rows, key=lambda r: str(r["at"]))
