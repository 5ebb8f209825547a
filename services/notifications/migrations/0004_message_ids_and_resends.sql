-- Each delivery's Message-ID, chosen once when it is queued: every copy of the mail (a resend
-- after a crash or a broken connection during DATA included) carries the same one, so a
-- receiver can recognise the repeat.
ALTER TABLE deliveries ADD COLUMN message_id text;
UPDATE deliveries SET message_id = '<' || id::text || '@subscription-platform>';
ALTER TABLE deliveries ALTER COLUMN message_id SET NOT NULL;

-- Nothing is lost: a mail whose hand-over outcome was unknown ('unconfirmed', formerly never
-- sent again) is handed over again, with its Message-ID.
UPDATE deliveries SET status = 'pending', claim_token = NULL, claimed_until = NULL,
       handed_over_at = NULL, next_attempt_at = created_at
WHERE status = 'unconfirmed';
