-- Durable timers: future work (a renewal date, a stage boundary, an installment, a retry) as rows.
-- Fired by any replica (claimed FOR UPDATE SKIP LOCKED); the effect and the "fired" mark commit
-- together, so a crash fires it again and never loses it.
CREATE TABLE timers (
    id         bigserial PRIMARY KEY,
    kind       text        NOT NULL,
    timer_key  text        NOT NULL,
    account_id uuid,
    clock_id   uuid,                   -- null: real time; else the test clock it follows
    due_at     timestamptz NOT NULL,
    payload    jsonb       NOT NULL DEFAULT '{}',
    status     text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired', 'failed')),
    attempts   int         NOT NULL DEFAULT 0,
    last_error text,
    fired_at   timestamptz,
    UNIQUE (kind, timer_key)
);
CREATE INDEX timers_pending ON timers (due_at, id) WHERE status = 'pending';

-- The current time of each test clock this service follows (null clock = real time).
CREATE TABLE test_clock_times (
    clock_id uuid PRIMARY KEY,
    now      timestamptz NOT NULL
);
