-- Issue 16: one-time sign-in links for the portal. Only the SHA-256 of the link's secret is
-- kept; a link is good until expires_at (the account's clock) and for one use (used_at).
CREATE TABLE sign_in_links (
    token_hash  bytea       PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id),
    user_id     uuid        NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX sign_in_links_user ON sign_in_links (user_id);
