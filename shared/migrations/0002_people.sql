-- Who holds which role on an account, projected from ordering's RolesChanged snapshots
-- (ordering writes it directly). Used by every service to decide access at request time.
CREATE TABLE account_people (
    account_id uuid   NOT NULL,
    user_id    uuid   NOT NULL,
    email      text   NOT NULL,
    name       text   NOT NULL,
    language   text   NOT NULL,
    roles      text[] NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE INDEX account_people_by_user ON account_people (user_id);
