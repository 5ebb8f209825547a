-- Issue 15: the mail's Date header, taken from the account's (business) clock when the mail is
-- queued and kept with it, so every copy (resends included) carries the same Date, as it
-- carries the same Message-ID. Null for older rows: their Date is created_at.
ALTER TABLE deliveries ADD COLUMN dated_at timestamptz;
