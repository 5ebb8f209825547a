-- The trace context (W3C traceparent) of the work that wrote an outbox row, so the relay can
-- put it in the Kafka message's headers and the consumers continue the trace (shared.tracing).
-- Null when there was none (tracing off and no incoming context, or rows written before).
ALTER TABLE outbox ADD COLUMN traceparent text;
