-- Test clocks (operators only, enabled by PLATFORM_TEST_CLOCKS_ENABLED): lifecycle owns them.
CREATE TABLE test_clocks (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    now        timestamptz NOT NULL,
    target     timestamptz NOT NULL,
    status     text        NOT NULL CHECK (status IN ('advancing', 'ready')),
    step       int         NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL
);
