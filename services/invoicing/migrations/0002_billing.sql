-- The account's name (printed on invoices) and the test clock its timers follow.
ALTER TABLE accounts ADD COLUMN name text, ADD COLUMN test_clock_id uuid;

-- What invoicing remembers of each subscription to bill its renewals, installments, co-terms
-- and retries: the offering, the channel, where it is billed and how it pays (token included).
CREATE TABLE subscriptions (
    id                   uuid PRIMARY KEY,
    account_id           uuid    NOT NULL,
    order_id             uuid    NOT NULL,
    offering             text    NOT NULL,
    term                 text    NOT NULL,
    seats                int     NOT NULL,
    channel              text    NOT NULL,
    payment_method       text    NOT NULL,
    payment_token        text,
    currency             text    NOT NULL,
    billing_country      text    NOT NULL,
    time_zone            text    NOT NULL,
    trial                boolean NOT NULL DEFAULT false,
    -- R22: PO details given before the renewal date, copied onto the renewal invoice.
    renewal_po_number    text,
    renewal_notes        text,
    renewal_po_document  bytea,
    renewal_po_file_name text,
    renewal_po_mime_type text
);

-- An invoice is identified by its business cause ("order:<id>", "renewal:<id>",
-- "installment:<origin>:<n>", "co_term:<id>"), so a redelivered cause finds it and stops;
-- installments share their order's id, so order_id is no longer unique.
ALTER TABLE invoices DROP CONSTRAINT invoices_order_id_key;
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('issued', 'paid', 'credited'));
ALTER TABLE invoices
    ADD COLUMN source_key      text UNIQUE,
    ADD COLUMN purpose         text    NOT NULL DEFAULT 'order',
    ADD COLUMN installment     int,
    ADD COLUMN renewal_id      uuid,
    ADD COLUMN channel         text    NOT NULL DEFAULT 'direct',
    ADD COLUMN billing_country text,
    ADD COLUMN time_zone       text    NOT NULL DEFAULT 'UTC',
    ADD COLUMN payer_emails    text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN payment_token   text,
    ADD COLUMN po_number       text,
    ADD COLUMN notes           text,
    ADD COLUMN po_document     bytea,
    ADD COLUMN po_file_name    text,
    ADD COLUMN po_mime_type    text;
UPDATE invoices SET source_key = 'order:' || order_id WHERE order_id IS NOT NULL;
CREATE INDEX invoices_by_subscription ON invoices (subscription_id, issued_at);

-- Every charge sent to the gateway, failed or not (R37 retries are attempts 2-5).
CREATE TABLE charge_attempts (
    invoice_id     uuid        NOT NULL REFERENCES invoices (id),
    attempt        int         NOT NULL,
    succeeded      boolean     NOT NULL,
    failure_reason text,
    reference      text        NOT NULL,
    attempted_at   timestamptz NOT NULL,
    PRIMARY KEY (invoice_id, attempt)
);

-- R39: credit notes have their own gapless series (CN-...).
CREATE TABLE credit_notes (
    id                       uuid PRIMARY KEY,
    credit_note_number       text          NOT NULL UNIQUE,
    invoice_id               uuid          NOT NULL UNIQUE REFERENCES invoices (id),
    refund_id                uuid          NOT NULL UNIQUE,
    account_id               uuid          NOT NULL,
    subscription_id          uuid,
    currency                 text          NOT NULL,
    net_total                numeric(20,4) NOT NULL,  -- negative: a credit note negates
    vat_total                numeric(20,4) NOT NULL,
    gross_total              numeric(20,4) NOT NULL,
    reason                   text          NOT NULL,
    issued_at                timestamptz   NOT NULL,
    refund_method            text          NOT NULL,
    refund_amount            numeric(20,4) NOT NULL,  -- 0 when the invoice was never paid
    refund_reference         text,
    expected_settlement_date date
);
CREATE INDEX credit_notes_by_account ON credit_notes (account_id, issued_at);

CREATE TABLE credit_note_lines (
    credit_note_id uuid          NOT NULL REFERENCES credit_notes (id),
    line_no        int           NOT NULL,
    description    text          NOT NULL,
    quantity       int           NOT NULL,
    unit_price     numeric(20,4) NOT NULL,
    net_amount     numeric(20,4) NOT NULL,
    vat_rate       numeric(6,3)  NOT NULL,
    vat_amount     numeric(20,4) NOT NULL,
    PRIMARY KEY (credit_note_id, line_no)
);

-- R19: market rates as fed by operators (API or CSV), from the base currency (USD).
CREATE TABLE market_rates (
    id          bigserial PRIMARY KEY,
    currency    text          NOT NULL,
    rate        numeric(20,8) NOT NULL CHECK (rate > 0),
    as_of       date          NOT NULL,
    source      text          NOT NULL CHECK (source IN ('api', 'csv')),
    recorded_at timestamptz   NOT NULL
);
CREATE INDEX market_rates_latest ON market_rates (currency, as_of, id);

-- R19: the applied rates with their history; the one in force is the latest effective_from.
CREATE TABLE applied_rates (
    currency       text          NOT NULL,
    channel        text          NOT NULL CHECK (channel IN ('direct', 'partner')),
    effective_from timestamptz   NOT NULL,
    rate           numeric(20,8) NOT NULL,
    previous_rate  numeric(20,8) NOT NULL,
    market_rate    numeric(20,8) NOT NULL,
    quarter_start  date          NOT NULL,
    computed_at    timestamptz   NOT NULL,
    PRIMARY KEY (currency, channel, effective_from)
);
