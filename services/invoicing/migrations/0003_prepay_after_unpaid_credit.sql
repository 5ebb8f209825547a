-- R34: an account whose subscription was cancelled on an unpaid invoice prepays from then on;
-- its other subscriptions that still renew by invoice get renewal invoices due at issue.
ALTER TABLE accounts ADD COLUMN prepay_only boolean NOT NULL DEFAULT false;
