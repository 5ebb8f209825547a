-- The expiry process (R31-R36), renewals (R25-R29) and what they need to remember.
ALTER TABLE subscriptions
    ADD COLUMN payment_method   text    NOT NULL DEFAULT 'card',  -- remembered for renewals
    ADD COLUMN channel          text    NOT NULL DEFAULT 'direct',
    ADD COLUMN trial            boolean NOT NULL DEFAULT false,   -- R17
    ADD COLUMN pending_term     text,                             -- R28, applied at renewal
    ADD COLUMN pending_offering text,                             -- R29, applied at renewal
    ADD COLUMN stage_changed_at timestamptz,
    ADD COLUMN stage_reason     text,
    ADD COLUMN next_stage_at    timestamptz,                      -- the next boundary, if any
    ADD COLUMN clock_id         uuid;                             -- test clocks (null: real time)

-- One row per renewal announced (RenewalDue); renewed_at is set when the term was renewed.
CREATE TABLE renewals (
    renewal_id       uuid PRIMARY KEY,
    subscription_id  uuid        NOT NULL REFERENCES subscriptions (id),
    offering         text        NOT NULL,
    term             text        NOT NULL,
    seats            int         NOT NULL,
    period_starts_at timestamptz NOT NULL,
    period_ends_at   timestamptz NOT NULL,  -- the new expiry instant
    announced_at     timestamptz NOT NULL,
    renewed_at       timestamptz
);
CREATE INDEX renewals_by_subscription ON renewals (subscription_id);

-- Invoicing's invoices of each subscription, as far as the expiry process needs them (R31).
CREATE TABLE invoices (
    invoice_id      uuid PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id),
    purpose         text NOT NULL,
    payment_method  text NOT NULL,
    renewal_id      uuid,
    due_date        date NOT NULL,
    paid_at         timestamptz
);
CREATE INDEX invoices_by_subscription ON invoices (subscription_id);
