"""Issue 16: the portal's journeys in Chromium, on the five processes and a test clock.

Each journey sets the scene through the public APIs (a purchase, a clock advance) and then does
what the person does, in the browser: sign in through the mailed link, read the pages, press
the buttons. Every page is screenshotted and checked with axe-core (``Pages.checked``).
"""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import Pages
from tests.e2e.journeys import Account, Journey, local

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


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


async def test_sign_in_by_mailed_link_see_the_subscription_and_the_invoice_pdf(
    journey: Journey, pages: Pages
) -> None:
    """The buyer signs in through the link read from the mail catcher, sees the bought
    subscription (stage in words, renewal date in Oslo time) and the paid invoice, and opens
    its PDF through the portal. The link works once: the second use is refused in words."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    account = await j.open_account()
    await bought(j, account)
    await j.advance(local(2030, 1, 10, 15, 0), "purchase settles")

    pages.open("/sign-in")
    pages.checked("sign-in")
    link = await pages.sign_in(account.buyer_email)
    pages.until("the subscription", lambda d: d.find_elements(By.CSS_SELECTOR, ".subscription"))
    text = pages.text()
    assert "autocad" in text and "Active" in text
    assert "product access: full" in text
    assert "10 January 2031" in text  # R23: renews on the anniversary, in the account's zone
    pages.checked("subscriptions")

    pages.open("/invoices")
    [row] = pages.driver.find_elements(By.CSS_SELECTOR, "tr.invoice")
    assert row.get_attribute("data-status") == "paid"
    assert "paid" in row.text and "NOK" in row.text  # en_GB: NOK 1,234.00
    pages.checked("invoices")
    pdf_href = row.find_element(By.CSS_SELECTOR, "a.pdf").get_attribute("href")
    fetched = pages.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(async r => done({"
        " status: r.status, type: r.headers.get('content-type'),"
        " head: new TextDecoder().decode((await r.arrayBuffer()).slice(0, 5))}));",
        pdf_href,
    )
    assert fetched == {"status": 200, "type": "application/pdf", "head": "%PDF-"}

    # The link is spent: signed out, the same link is refused in words (R: single use).
    pages.press("form[action='/sign-out'] button")
    pages.until("signed out", lambda d: "/sign-in" in d.current_url)
    pages.driver.get(link)
    pages.press("#use-link")
    pages.until("the refusal", lambda d: d.find_elements(By.CSS_SELECTOR, ".problem"))
    assert "This sign-in link has already been used" in pages.text()
    assert "Traceback" not in pages.driver.page_source
    pages.checked("link-used")
