-- What notifications knows of each account, projected from AccountOpened.
CREATE TABLE accounts (
    id        uuid PRIMARY KEY,
    language  text NOT NULL,
    time_zone text NOT NULL
);

-- One row per (event, address): the unique key is what makes a mail go out at most once (R12).
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    account_id      uuid        NOT NULL,
    recipient       text        NOT NULL,
    roles           text[]      NOT NULL,
    template        text        NOT NULL,
    language        text        NOT NULL,
    subject         text        NOT NULL,
    body_text       text        NOT NULL,
    body_html       text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    UNIQUE (event_id, recipient)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_account ON deliveries (account_id, created_at);
