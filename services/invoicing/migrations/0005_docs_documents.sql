-- Issue 15: what an invoice or credit note prints and its e-invoice carries.
-- The account's billing identity as ordering last published it (BillingDetailsChanged, whole):
-- a table of its own, so it is kept whichever of AccountOpened and it arrives first.
CREATE TABLE account_billing_details (
    account_id  uuid PRIMARY KEY,
    billing     jsonb NOT NULL
);
-- Fixed at issue, as the document must keep saying it: the buyer's identity then, the offering
-- and term billed (printed by name) and the service period covered (local dates, inclusive).
ALTER TABLE invoices
    ADD COLUMN buyer_billing jsonb,
    ADD COLUMN offering      text,
    ADD COLUMN term          text,
    ADD COLUMN period_start  date,
    ADD COLUMN period_end    date;
