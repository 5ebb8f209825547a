"""Invoicing: prices, VAT, exchange rates, invoices, payments, credit notes (R7, R15, R18-R22,
R25, R30, R37, R39).

Consumes: AccountOpened, RolesChanged (payers, R7), OrderPlaced (not trials, R17), TrialConverted,
RenewalDue (R25; an accepted partner renewal quote's ``priced_lines`` billed as they are, R16,
R27, one invoice per renewal id), RenewalRequested (R27), SeatsAdded (R30), StageChanged
(Cancelled: R34), AutoRenewChanged (R24), RefundApproved (R39).
Publishes: InvoiceIssued, PaymentSucceeded, PaymentFailed (R37 attempt and next attempt),
InvoicePaid (purpose, renewal id), CreditNoteIssued, RefundProcessed, InvoiceDueSoon and
InvoiceOverdue (R9, R11: an open pay-by-invoice invoice, 7 days before and 1 and 7 days after its
due date; README.md says why), ExchangeRateApplied (R19: each applied rate a recomputation
inserts, keyed by the nil account; ordering prices with them).
An order's ``priced_lines`` (ordering prices every paid order, services/ordering/README.md) are
billed as they are, at the rate ordering priced them at; the pricing itself is ``shared.pricing``.
Timers: ``renewal_charge_retry`` (R37: days 1, 3, 7, 14, for every card/PayPal charge),
``installment`` (R20: first and second anniversary), ``invoice_due_reminder`` (R9, R11),
``fx_quarter`` (R19: 1 Jan, 1 Apr, 1 Jul, 1 Oct, 00:00 UTC).

HTTP (``/v1``): ``GET accounts/{id}/invoices``, ``GET invoices/{id}``, ``GET invoices/{id}.pdf``,
``PATCH invoices/{id}`` (R22), ``GET invoices/{id}/po-document``,
``PUT subscriptions/{id}/renewal-purchase-order`` (R22), ``GET accounts/{id}/credit-notes``,
``GET credit-notes/{id}``, ``GET credit-notes/{id}.pdf``; operators:
``POST operator/invoices/{id}/bank-payments``, ``POST operator/exchange-rates/market`` (JSON),
``POST operator/exchange-rates/market.csv`` (``currency,rate,as_of``),
``POST operator/exchange-rates/recompute``, ``GET operator/exchange-rates``.
Sandbox payment tokens: see ``gateway.py``; the exchange-rate schedule: see
``exchange_rates.py``.

Inside: ``service.py`` (one function per use case; the billing steps they share in
``billing.py``, their commands in ``commands.py``), ``domain.py`` and ``exchange_rates.py`` (the
rules, no I/O), ``models.py`` (typed rows and the ``Repository`` port), ``repository.py`` (SQL),
``schemas.py`` and ``api.py`` (the HTTP door), ``handlers.py`` (events and timers to use cases),
``printing.py``/``pdf.py`` (documents) and ``gateway.py`` (card and PayPal). An event about a
subscription whose ``OrderPlaced`` was not handled yet waits for it (``shared.messaging``'s
deferred events) and is applied when the order is.
"""
