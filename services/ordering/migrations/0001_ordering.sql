CREATE TABLE accounts (
    id                uuid PRIMARY KEY,
    name              text        NOT NULL,
    country           text        NOT NULL,
    currency          text        NOT NULL,
    language          text        NOT NULL,
    time_zone         text        NOT NULL,
    tax_exempt_reason text,
    test_clock_id     uuid,
    opened_at         timestamptz NOT NULL
);

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    account_id uuid        NOT NULL REFERENCES accounts (id),
    email      text        NOT NULL,
    name       text        NOT NULL,
    language   text        NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (account_id, email)
);

-- Roles live in the shared account_people table (shared/migrations/0002_people.sql): ordering
-- is its source of truth, and publishes every change as a RolesChanged snapshot.

CREATE SEQUENCE order_number_seq;

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    order_number    text        NOT NULL UNIQUE,
    account_id      uuid        NOT NULL REFERENCES accounts (id),
    placed_by       uuid        NOT NULL REFERENCES users (id),
    subscription_id uuid        NOT NULL,
    offering        text        NOT NULL,
    term            text        NOT NULL,
    seats           int         NOT NULL CHECK (seats > 0),
    payment_method  text        NOT NULL,
    channel         text        NOT NULL,
    auto_renew      boolean     NOT NULL,
    placed_at       timestamptz NOT NULL
);
CREATE INDEX orders_by_account ON orders (account_id, placed_at);
