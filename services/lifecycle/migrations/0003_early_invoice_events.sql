-- Kafka orders events per topic, not across topics: an InvoiceIssued (invoicing.events) can be
-- read before the OrderPlaced (ordering.events) that caused it. It is kept here and applied
-- when the subscription is activated, so an unpaid invoice still starts R31's clock.
CREATE TABLE early_invoice_events (
    event_id        uuid PRIMARY KEY,
    subscription_id uuid        NOT NULL,
    envelope        jsonb       NOT NULL
);
CREATE INDEX early_invoice_events_by_subscription ON early_invoice_events (subscription_id);
