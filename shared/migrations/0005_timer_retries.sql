-- A failed timer is retried later without moving its due time (handlers compare it with the
-- business date it stands for): retry_at is real time, set by the timer loop on failure.
ALTER TABLE timers ADD COLUMN retry_at timestamptz;
