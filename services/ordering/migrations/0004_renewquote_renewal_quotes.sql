-- R27 [ours, issue 11]: a partner's quote may renew an existing subscription of the account on
-- its anniversary (renews_subscription_id, for the renewal date renews_at). A renewal quote
-- issued again for the same subscription replaces the open one (superseded_by, superseded_at):
-- the replaced quote can no longer be accepted.
ALTER TABLE quotes ADD COLUMN renews_subscription_id uuid REFERENCES subscriptions (id);
ALTER TABLE quotes ADD COLUMN renews_at             timestamptz;
ALTER TABLE quotes ADD COLUMN superseded_by         uuid REFERENCES quotes (id);
ALTER TABLE quotes ADD COLUMN superseded_at         timestamptz;
CREATE INDEX quotes_by_renewed_subscription ON quotes (renews_subscription_id)
    WHERE renews_subscription_id IS NOT NULL;

-- The renewal request an accepted renewal quote placed (R16: billed at the quoted price).
ALTER TABLE renewal_requests ADD COLUMN quote_id uuid REFERENCES quotes (id);

-- R37: the subscription lapsed because its renewal charge was declined, so its renewal invoice
-- is open (and retried) until it is paid or the subscription is active again. A renewal quote is
-- not accepted meanwhile: it would invoice the same renewal a second time.
ALTER TABLE subscriptions ADD COLUMN renewal_charge_failed boolean NOT NULL DEFAULT false;
