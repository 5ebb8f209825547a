"""Issue 16: the portal's journeys in Chromium, on the five processes and a test clock.

Each journey sets the scene through the public APIs (a purchase, a clock advance) and then does
what the person does, in the browser: sign in through the mailed link, read the pages, press
the buttons. Every page is screenshotted and checked with axe-core (``Pages.checked``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from shared.topics import Topics
from tests.browser.conftest import Pages
from tests.e2e.journeys import Account, Journey, local
from tests.integration.test_consumer import send
from tests.support import Backing, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def operator_signs_in(pages: Pages, j: Journey) -> None:
    """With an operator token (python -m shared.auth mint --kind operator)."""
    pages.open("/operator/sign-in")
    pages.checked("operator-sign-in")
    pages.fill("token", j.operator["Authorization"].removeprefix("Bearer "))
    pages.press("form[action='/operator/sign-in'] button")
    pages.until("the operator's page", lambda d: d.current_url.endswith("/operator"))


async def bought(j: Journey, account: Account, **changes: Any) -> dict[str, Any]:
    order = {
        "offering": "autocad",
        "term": "annual",
        "seats": 1,
        "payment_method": "card",
        "payment_token": "tok_success",
    }
    return await j.post(
        "ordering", f"/v1/accounts/{account.id}/orders", account.auth, {**order, **changes}
    )


async def test_sign_in_by_mailed_link_buy_and_open_the_invoice_pdf(
    journey: Journey, pages: Pages
) -> None:
    """The buyer signs in through the link read from the mail catcher, buys AutoCAD in the
    portal, sees the subscription (stage in words, renewal date in Oslo time) and the paid
    invoice, and opens its PDF through the portal. Every customer page passes axe. The link
    works once: the second use is refused in words."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    account = await j.open_account()

    pages.open("/sign-in")
    pages.checked("sign-in")
    link = await pages.sign_in(account.buyer_email)
    pages.checked("no-subscriptions")

    pages.open("/buy")
    pages.checked("buy")
    Select(pages.driver.find_element(By.ID, "offering")).select_by_value("autocad")
    Select(pages.driver.find_element(By.ID, "term")).select_by_value("annual")
    pages.fill("seats", "1")
    pages.fill("token", "tok_success")
    pages.press("#buy button")
    pages.until("the order", lambda d: "Ordered." in pages.text())

    def active(driver: Any) -> bool:
        pages.open("/subscriptions")
        found = driver.find_elements(By.CSS_SELECTOR, ".subscription")
        return bool(found and found[0].get_attribute("data-stage") == "active")

    pages.until("the subscription to be active", active, timeout=60)
    text = pages.text()
    assert "autocad" in text and "Active" in text
    assert "product access: full" in text
    assert "10 January 2031" in text  # R23: renews on the anniversary, in the account's zone
    pages.checked("subscriptions")

    # R28: a term change from the next renewal, chosen in the page's "Change the subscription".
    pages.press(".subscription details summary")
    Select(pages.driver.find_element(By.CSS_SELECTOR, "select[name='term']")).select_by_value(
        "three_year"
    )
    pages.press("form[action$='/actions/term-change'] button")
    pages.until("saved", lambda d: "Saved." in pages.text())

    def pending(driver: Any) -> bool:
        pages.open("/subscriptions")
        return "Term from the next renewal\nthree-year" in pages.text()

    pages.until("lifecycle to show the pending term", pending, timeout=30)

    def paid(driver: Any) -> bool:
        pages.open("/invoices")
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.invoice")
        return bool(rows and rows[0].get_attribute("data-status") == "paid")

    pages.until("the invoice to be paid", paid, timeout=60)
    pages.open("/invoices")
    [row] = pages.driver.find_elements(By.CSS_SELECTOR, "tr.invoice")
    assert row.get_attribute("data-status") == "paid"
    assert "paid" in row.text and "NOK" in row.text  # en_GB: NOK 1,234.00
    pages.checked("invoices")
    pages.fits_a_phone("invoices")
    [row] = pages.driver.find_elements(By.CSS_SELECTOR, "tr.invoice")
    pdf_href = row.find_element(By.CSS_SELECTOR, "a.pdf").get_attribute("href")
    fetched = pages.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(async r => done({"
        " status: r.status, type: r.headers.get('content-type'),"
        " head: new TextDecoder().decode((await r.arrayBuffer()).slice(0, 5))}));",
        pdf_href,
    )
    assert fetched == {"status": 200, "type": "application/pdf", "head": "%PDF-"}

    for path, name in (
        ("/payment-center", "payment-center"),
        ("/users", "users"),
        ("/mail", "mail"),
    ):
        pages.open(path)
        pages.checked(name)
    assert "Order confirmation" in pages.text()  # the mail log names the mails sent

    # The link is spent: signed out, the same link is refused in words (single use).
    pages.press("form[action='/sign-out'] button")
    pages.until("signed out", lambda d: "/sign-in" in d.current_url)
    pages.driver.get(link)
    pages.press("#use-link")
    pages.until("the refusal", lambda d: d.find_elements(By.CSS_SELECTOR, ".problem"))
    assert "This sign-in link has already been used" in pages.text()
    assert "Traceback" not in pages.driver.page_source
    pages.checked("link-used")

    # Issue 15 [links]: the invoice mail names the product and links the invoice's page in the
    # portal; opened signed out, it leads through sign-in (the mailed link, read from the
    # catcher, used in this browser) to that invoice's page.
    async def invoice_mail() -> dict[str, Any] | None:
        mails = await pages.mail.to(account.buyer_email)
        found = [m for m in mails if str(m["subject"]).startswith("Your invoice")]
        return found[0] if found else None

    mail = await wait_for(invoice_mail, timeout=60, what="the invoice mail")
    assert "AutoCAD" in mail["subject"] and "autocad" not in mail["text"]
    [invoice_page] = [
        w for w in str(mail["text"]).split() if w.startswith(pages.base + "/invoices/")
    ]
    assert f'href="{invoice_page}"' in mail["html"]
    page_path = invoice_page.removeprefix(pages.base)
    pages.open(page_path)  # signed out: to sign-in, which says it returns to the page
    pages.until("the sign-in page", lambda d: "/sign-in?next=" in d.current_url)
    assert "you return to it once signed in" in pages.text()
    pages.checked("sign-in-to-return")
    await pages.sign_in(account.buyer_email, start=page_path, lands_on=page_path)
    assert pages.heading().startswith("Invoice INV-")
    facts = pages.driver.find_element(By.CSS_SELECTOR, ".invoice-facts")
    assert facts.get_attribute("data-status") == "paid" and "paid" in facts.text
    lines = pages.driver.find_element(By.CSS_SELECTOR, "table.lines").text
    assert "AutoCAD subscription, 1 year, 1 seat(s)" in lines and "25%" in lines  # R18 VAT
    assert pages.driver.find_elements(By.CSS_SELECTOR, "form.pay") == []  # paid: no Pay form
    pages.checked("invoice-page")
    pages.tab_to("invoice-pdf")  # by keyboard
    pages.fits_a_phone("invoice-page")


async def test_declined_renewal_new_card_pay_and_active_again(
    journey: Journey, pages: Pages
) -> None:
    """R37: the renewal charge declines and the subscription is Expired; in the portal the buyer
    adds a new card in the payment center, pays the open renewal invoice with it (Pay, a chosen
    method) and sees the subscription Active again (R32)."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    account = await j.open_account()
    await bought(j, account)
    await j.advance(local(2030, 1, 10, 15, 0), "purchase settles")
    await j.post(  # the card saved later stops working before the renewal
        "invoicing",
        f"/v1/accounts/{account.id}/payment-methods",
        account.auth,
        {"type": "card", "payment_token": "tok_decline"},
    )
    await j.advance(local(2031, 1, 10, 12, 0), "renewal day: the charge is declined")

    await pages.sign_in(account.buyer_email)
    stage = pages.driver.find_element(By.CSS_SELECTOR, ".subscription .stage")
    assert stage.text == "Expired"
    pages.checked("expired")

    pages.open("/payment-center")
    assert "Visa **** 0002 (Default)" in pages.text()
    pages.fill("token", "tok_success")
    pages.press("#make_default")  # keep the old default: pay with the new card by choice
    pages.press("#add-method button")
    pages.until("the new card", lambda d: "Visa **** 4242" in pages.text())
    assert "Saved." in pages.text()
    pages.checked("payment-center")

    pages.open("/invoices")
    [renewal] = [
        row
        for row in pages.driver.find_elements(By.CSS_SELECTOR, "tr.invoice")
        if row.get_attribute("data-status") == "issued"
    ]
    assert "renewal" in renewal.text and "open" in renewal.text
    pages.checked("open-renewal-invoice")
    label = pages.driver.find_element(
        By.XPATH, "//form[contains(@class,'pay')]//label[contains(., '4242')]"
    )
    pages.press(f"#{label.get_attribute('for')}")
    pages.press("form.pay button[type=submit]")
    pages.until("paid", lambda d: "Paid. Thank you." in pages.text())
    statuses = [
        r.get_attribute("data-status")
        for r in pages.driver.find_elements(By.CSS_SELECTOR, "tr.invoice")
    ]
    assert statuses == ["paid", "paid"]
    pages.checked("paid")

    def active_again(driver: Any) -> bool:
        pages.open("/subscriptions")
        return bool(driver.find_element(By.CSS_SELECTOR, ".subscription .stage").text == "Active")

    pages.until("lifecycle to read InvoicePaid", active_again, timeout=60)
    assert "10 January 2032" in pages.text()  # R23: renewed on its anniversary
    pages.checked("active-again")


async def test_a_secondary_admin_sees_no_invoices(journey: Journey, pages: Pages) -> None:
    """R8: a secondary admin signs in by link, sees the product view of the subscription (no
    dates or billing) and, on the invoice page, the refusal in words, not one invoice."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    account = await j.open_account()
    await bought(j, account)
    await j.advance(local(2030, 1, 10, 15, 0), "purchase settles")
    email = f"admin-{account.id[:8]}@example.com"
    user = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/users",
        account.auth,
        {"email": email, "name": "Ola"},
    )
    await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/secondary-admins",
        account.auth,
        {"user_id": user["user_id"]},
        expect=200,
    )

    await pages.sign_in(email)
    # Personal mail: the admin's link went to the admin only, never to the buyer.
    assert [link for m in await pages.mail.to(account.buyer_email) for link in pages.links(m)] == []
    text = pages.text()
    assert "autocad" in text and "Active" in text
    assert "Renews on" not in text and "Auto-renew" not in text  # R8: the product view only
    pages.checked("admin-subscriptions")

    pages.open("/invoices")
    assert pages.heading() == "Invoices and credit notes"
    assert "Your role does not allow this" in pages.text()
    assert pages.driver.find_elements(By.CSS_SELECTOR, "tr.invoice") == []
    pages.checked("admin-invoices-refused")

    pages.press("a[lang='nb']")  # the same refusal in Norwegian, readable on a phone
    pages.until("Norwegian", lambda d: pages.heading() == "Fakturaer og kreditnotaer")
    assert "Rollen din gir ikke tilgang til dette" in pages.text()
    pages.checked("admin-invoices-refused-nb")
    pages.fits_a_phone("admin-invoices-refused-nb")
    pages.open("/subscriptions")
    assert "Aktiv" in pages.text() and "produkttilgang: full" in pages.text()
    pages.fits_a_phone("admin-subscriptions-nb")


async def test_an_operator_advances_a_test_clock_and_sees_the_stage_change(
    journey: Journey, pages: Pages
) -> None:
    """An operator signs in with an operator token, finds the account, opens its test clock,
    advances it past the expiry of a subscription whose auto-renew is off (R24) and sees the
    stage go from Active to Expired (R35) with the timeline of what happened."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    account = await j.open_account()
    order = await bought(j, account)
    await j.advance(local(2030, 1, 10, 15, 0), "purchase settles")
    assert order["auto_renew"] is True
    await pages.sign_in(account.buyer_email)  # R24: the buyer turns auto-renew off
    pages.press(".subscription form[action$='/auto-renew'] button")
    pages.until("saved", lambda d: "Saved." in pages.text())
    assert "Auto-renew\nOff" in pages.text()
    assert "Expires on" in pages.text() and "9 January 2031 23:59" in pages.text()
    pages.press("form[action='/sign-out'] button")
    pages.until("signed out", lambda d: "/sign-in" in d.current_url)

    operator_signs_in(pages, j)
    pages.fill("account", account.id)
    pages.press("form[action='/operator'] button")
    pages.until("the account", lambda d: "Fjord Arkitekter AS" in pages.text())
    pages.checked("operator-account")

    pages.press(f"a[href^='/operator/clocks/{j.clock_id}']")
    stage = pages.until(
        "the clock page", lambda d: d.find_element(By.CSS_SELECTOR, "li.subscription")
    )
    assert stage.get_attribute("data-stage") == "active"
    pages.checked("clock-before")

    pages.fill("to", local(2031, 1, 10, 12, 0).isoformat())
    pages.press("form[action$='/advance'] button")

    def expired(driver: Any) -> bool:
        status = driver.find_element(By.ID, "clock-status").get_attribute("data-status")
        sub = driver.find_element(By.CSS_SELECTOR, "li.subscription")
        return bool(status == "ready" and sub.get_attribute("data-stage") == "expired")

    pages.until("the page to redraw itself once the clock is ready", expired, timeout=120)
    assert "autocad: Expired" in pages.text()
    timeline = pages.driver.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "autocad: Active" in timeline and "autocad: Expired" in timeline
    assert ": issued" in timeline and ": paid" in timeline  # the order invoice
    assert "10 January 2030 14:30 CET" in timeline  # R13: in the account's time zone
    pages.checked("clock-after")
    for path, name in (("/operator/clocks", "clocks"), ("/operator/exchange-rates", "rates")):
        pages.open(path)
        pages.checked(name)


async def test_an_operator_inspects_and_replays_dead_letters(
    journey: Journey, pages: Pages, backing: Backing
) -> None:
    """A message no consumer can read is dead-lettered by each consumer of ordering's topic; the
    operator sees it per service with its reason and replays invoicing's: that one, and no
    other service's, is marked replayed (shared.dead_letters: to that consumer only)."""
    j = journey
    topics = Topics(j.dep.prefix)
    await send(backing, topics.events("ordering"), uuid.uuid4(), b"{not json")
    operator_signs_in(pages, j)

    def dead_lettered(driver: Any) -> bool:
        pages.open("/operator/dead-letters")
        rows = driver.find_elements(By.CSS_SELECTOR, "[data-service='invoicing'] tr.dead-letter")
        return bool(rows)

    pages.until("invoicing to dead-letter the message", dead_lettered, timeout=60)
    invoicing = pages.driver.find_element(By.CSS_SELECTOR, "[data-service='invoicing']")
    assert "unparseable" in invoicing.text  # the reason, from the dead letter's headers
    assert "waiting" in invoicing.text
    pages.checked("dead-letters")

    invoicing.find_element(By.CSS_SELECTOR, "button").click()
    pages.until("replayed", lambda d: "Replayed what was waiting." in pages.text())

    def marked(service: str) -> list[str]:
        css = f"[data-service='{service}'] tr.dead-letter"
        return [
            r.get_attribute("data-replayed") or ""
            for r in pages.driver.find_elements(By.CSS_SELECTOR, css)
        ]

    assert marked("invoicing")[0] == "yes"
    assert "yes" not in marked("lifecycle")  # a replay reaches the one consumer only
    pages.checked("dead-letters-replayed")
