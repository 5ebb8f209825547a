-- The trace context (W3C traceparent) of the work that scheduled a timer: the trace the timer
-- starts when it fires links to it as its cause (shared.tracing). Null when there was none.
ALTER TABLE timers ADD COLUMN traceparent text;
