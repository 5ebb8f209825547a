-- The correlation id of the event that asked for a mail, so EmailSent / EmailFailed keep the
-- purchase's correlation and name that event as their cause (issue 14). Null for older rows.
ALTER TABLE deliveries ADD COLUMN correlation_id uuid;
