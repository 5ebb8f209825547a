-- Issue 11: ordering's view of the buyer's saved payment methods (invoicing's wallet, from its
-- PaymentMethodAdded / PaymentMethodRemoved), so a subscription's renewal method names one of
-- the account's own methods. No token, no label: only what the rule needs.
CREATE TABLE saved_payment_methods (
    id          uuid PRIMARY KEY,
    account_id  uuid    NOT NULL,
    kind        text    NOT NULL,
    removed     boolean NOT NULL DEFAULT false
);
