-- The trace context (W3C traceparent) of the handler that queued a mail: the delivery worker's
-- SMTP hand-over (and the EmailSent it emits) continue that trace (shared.tracing). Null for
-- older rows and when there was none.
ALTER TABLE deliveries ADD COLUMN traceparent text;
