-- Events that wait for their cause are kept by the shared mechanism (shared.messaging,
-- deferred_events): move any still parked here and drop the old table. A parked event waited
-- for the account's people (or for its cause, which the release re-checks), so it waits for
-- 'people:<account>' and is applied at the account's next roles snapshot or routed event.
INSERT INTO deferred_events (consumer, event_id, cause, reason, envelope, deferred_at)
SELECT 'notifications', event_id, 'people:' || account_id::text,
       'moved from parked_events', envelope, parked_at
FROM parked_events
ORDER BY parked_at
ON CONFLICT DO NOTHING;

DROP TABLE parked_events;
