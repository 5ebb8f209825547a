-- R2, R14 (issue 11): the buyer's saved card and PayPal methods (the gateway's token, never a
-- card number; the label is what the gateway shows), one default per account, and the saved
-- method each subscription renews with (NULL: the account's default, else its order's token).
CREATE TABLE payment_methods (
    id          uuid PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id),
    kind        text        NOT NULL CHECK (kind IN ('card', 'paypal')),
    token       text        NOT NULL,
    label       text        NOT NULL,
    is_default  boolean     NOT NULL DEFAULT false,
    added_at    timestamptz NOT NULL,
    removed_at  timestamptz
);
CREATE INDEX payment_methods_account ON payment_methods (account_id) WHERE removed_at IS NULL;
CREATE UNIQUE INDEX payment_methods_one_default ON payment_methods (account_id)
    WHERE is_default AND removed_at IS NULL;

ALTER TABLE subscriptions ADD COLUMN payment_method_id uuid REFERENCES payment_methods (id);
ALTER TABLE subscriptions ADD COLUMN cancelled boolean NOT NULL DEFAULT false;
