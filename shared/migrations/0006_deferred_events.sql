-- Events that arrived before their cause (shared.messaging, "waiting for a cause"): consumed
-- (their inbox row is written) but not yet applied; released when a handler handles the cause.
CREATE TABLE deferred_events (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    cause       text        NOT NULL,  -- what it waits for, e.g. 'subscription:<uuid>'
    reason      text        NOT NULL,
    envelope    jsonb       NOT NULL,
    deferred_at timestamptz NOT NULL DEFAULT now(),
    seq         bigserial,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX deferred_events_by_cause ON deferred_events (consumer, cause, seq);
