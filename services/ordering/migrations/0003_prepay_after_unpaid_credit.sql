-- R34: when a cancellation followed an unpaid line of credit, the account must prepay
-- (card/PayPal only) for later orders. lapsed_unpaid remembers why a subscription lapsed (from
-- lifecycle's StageChanged reason) until it is active again or cancelled.
ALTER TABLE accounts ADD COLUMN prepay_only boolean NOT NULL DEFAULT false;
ALTER TABLE subscriptions ADD COLUMN lapsed_unpaid boolean NOT NULL DEFAULT false;
