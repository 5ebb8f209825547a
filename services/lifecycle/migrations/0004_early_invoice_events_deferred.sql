-- An InvoiceIssued read before its OrderPlaced now waits in the shared deferred_events
-- (shared.messaging, "waiting for a cause"), released when the subscription is activated.
-- Rows kept by the old mechanism move there, then its table goes.
INSERT INTO deferred_events (consumer, event_id, cause, reason, envelope)
SELECT 'lifecycle', event_id, 'subscription:' || subscription_id::text,
       'InvoiceIssued read before its OrderPlaced', envelope
FROM early_invoice_events
ON CONFLICT DO NOTHING;
DROP TABLE early_invoice_events;
