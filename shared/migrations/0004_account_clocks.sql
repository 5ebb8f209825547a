-- Which accounts follow a test clock (from AccountOpened.test_clock_id); absent = real time.
CREATE TABLE account_clocks (
    account_id uuid PRIMARY KEY,
    clock_id   uuid NOT NULL
);
CREATE INDEX account_clocks_by_clock ON account_clocks (clock_id);
