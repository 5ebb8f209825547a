-- The account's name, for mails (from AccountOpened).
ALTER TABLE accounts ADD COLUMN name text;

-- Which product a subscription is, so mails about it can name it (from OrderPlaced and
-- SubscriptionActivated).
CREATE TABLE subscriptions (
    id         uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    offering   text NOT NULL
);

-- A delivery's life: pending (claimed by a worker for a lease) -> handing_over (recorded just
-- before DATA: from here the server may hold the mail) -> sent | failed (5xx, never retried) |
-- pending again (4xx or no connection, with backoff) | unconfirmed (the worker died or the
-- connection broke during DATA: never sent again, so no address gets the mail twice, R12).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'handing_over', 'sent', 'failed', 'unconfirmed'));
ALTER TABLE deliveries
    ADD COLUMN claim_token    uuid,
    ADD COLUMN claimed_until  timestamptz,
    ADD COLUMN handed_over_at timestamptz,
    ADD COLUMN failed_at      timestamptz;
CREATE INDEX deliveries_handing_over ON deliveries (handed_over_at) WHERE status = 'handing_over';

-- Events that arrived (on another topic) before the account's first RolesChanged: kept, and
-- routed when the roles arrive, since Kafka orders events per topic, not across topics.
CREATE TABLE parked_events (
    event_id   uuid PRIMARY KEY,
    account_id uuid        NOT NULL,
    envelope   jsonb       NOT NULL,
    parked_at  timestamptz NOT NULL
);
CREATE INDEX parked_events_by_account ON parked_events (account_id, parked_at);
