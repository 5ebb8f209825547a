-- Orders of every kind: a purchase, a trial, a trial's conversion (R17), added seats (R30).
ALTER TABLE orders ADD COLUMN kind     text NOT NULL DEFAULT 'purchase';
ALTER TABLE orders ADD COLUMN quote_id uuid;

CREATE SEQUENCE quote_number_seq;

-- R16: a partner's quote for an account; only that account's buyer may accept it.
CREATE TABLE quotes (
    id           uuid PRIMARY KEY,
    quote_number text          NOT NULL UNIQUE,
    account_id   uuid          NOT NULL REFERENCES accounts (id),
    partner_id   uuid          NOT NULL,
    offering     text          NOT NULL,
    term         text          NOT NULL,
    seats        int           NOT NULL CHECK (seats > 0),
    currency     text          NOT NULL,
    net_amount   numeric(14,2) NOT NULL,
    usd_value    numeric(14,2) NOT NULL,
    valid_until  date          NOT NULL,
    issued_at    timestamptz   NOT NULL,
    order_id     uuid,
    accepted_at  timestamptz
);
CREATE INDEX quotes_by_account ON quotes (account_id);

-- Ordering's own view of each subscription: what it sold, plus the dates and stage lifecycle
-- publishes (SubscriptionActivated, SubscriptionRenewed, StageChanged, SubscriptionReactivated).
CREATE TABLE subscriptions (
    id               uuid PRIMARY KEY,
    account_id       uuid        NOT NULL REFERENCES accounts (id),
    offering         text        NOT NULL,
    term             text        NOT NULL,
    seats            int         NOT NULL CHECK (seats > 0),
    payment_method   text        NOT NULL,
    channel          text        NOT NULL,
    auto_renew       boolean     NOT NULL,
    trial            boolean     NOT NULL,
    stage            text        NOT NULL DEFAULT 'pending',
    time_zone        text        NOT NULL,
    starts_at        timestamptz,
    expires_at       timestamptz,
    renews_at        timestamptz,
    purchased_at     timestamptz NOT NULL,  -- the last purchase or renewal (R29, R38)
    purchase_kind    text        NOT NULL DEFAULT 'order',
    pending_term     text,                  -- R28
    pending_offering text,                  -- R29
    refunded_at      timestamptz            -- R38
);
CREATE INDEX subscriptions_by_account ON subscriptions (account_id);

-- R27: manual and late renewal requests.
CREATE TABLE renewal_requests (
    id              uuid PRIMARY KEY,
    subscription_id uuid        NOT NULL REFERENCES subscriptions (id),
    kind            text        NOT NULL,
    renews_at       timestamptz NOT NULL,  -- the renewal date it renews: one request each
    payment_method  text        NOT NULL,
    requested_by    uuid        NOT NULL,
    requested_at    timestamptz NOT NULL,
    UNIQUE (subscription_id, renews_at)
);

-- R38: approved refunds.
CREATE TABLE refunds (
    id              uuid PRIMARY KEY,
    subscription_id uuid        NOT NULL REFERENCES subscriptions (id),
    purchase_kind   text        NOT NULL,
    purchased_at    timestamptz NOT NULL,
    reason          text        NOT NULL,
    approved_by     uuid        NOT NULL,
    approved_at     timestamptz NOT NULL
);
