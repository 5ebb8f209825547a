CREATE TABLE subscriptions (
    id           uuid PRIMARY KEY,
    account_id   uuid        NOT NULL,
    order_id     uuid        NOT NULL UNIQUE,
    offering     text        NOT NULL,
    term         text        NOT NULL,
    seats        int         NOT NULL,
    time_zone    text        NOT NULL,
    auto_renew   boolean     NOT NULL,
    stage        text        NOT NULL CHECK (stage IN ('active', 'expired', 'suspended', 'cancelled')),
    anniversary  date        NOT NULL,
    starts_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    renews_at    timestamptz NOT NULL,
    activated_at timestamptz NOT NULL
);
CREATE INDEX subscriptions_by_account ON subscriptions (account_id);
