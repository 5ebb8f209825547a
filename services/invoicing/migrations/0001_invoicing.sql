-- What invoicing knows of each account, projected from AccountOpened.
CREATE TABLE accounts (
    id                uuid PRIMARY KEY,
    country           text NOT NULL,
    currency          text NOT NULL,
    language          text NOT NULL,
    time_zone         text NOT NULL,
    tax_exempt_reason text
);

-- Gapless numbering: the row lock taken by the increment is held until the invoice commits,
-- so a rolled-back invoice gives its number back and no two invoices share one.
CREATE TABLE invoice_series (
    series      text PRIMARY KEY,
    last_number bigint NOT NULL
);

CREATE TABLE invoices (
    id                uuid PRIMARY KEY,
    invoice_number    text          NOT NULL UNIQUE,
    account_id        uuid          NOT NULL,
    subscription_id   uuid,
    order_id          uuid UNIQUE,
    currency          text          NOT NULL,
    exchange_rate     numeric(20,8) NOT NULL,
    net_total         numeric(20,4) NOT NULL,
    vat_total         numeric(20,4) NOT NULL,
    gross_total       numeric(20,4) NOT NULL,
    payment_method    text          NOT NULL,
    status            text          NOT NULL CHECK (status IN ('issued', 'paid')),
    tax_exempt_reason text,
    issued_at         timestamptz   NOT NULL,
    due_date          date          NOT NULL,
    paid_at           timestamptz
);
CREATE INDEX invoices_by_account ON invoices (account_id, issued_at);

CREATE TABLE invoice_lines (
    invoice_id  uuid          NOT NULL REFERENCES invoices (id),
    line_no     int           NOT NULL,
    description text          NOT NULL,
    quantity    int           NOT NULL,
    unit_price  numeric(20,4) NOT NULL,
    net_amount  numeric(20,4) NOT NULL,
    vat_rate    numeric(6,3)  NOT NULL,
    vat_amount  numeric(20,4) NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

CREATE TABLE payments (
    id         uuid PRIMARY KEY,
    invoice_id uuid          NOT NULL UNIQUE REFERENCES invoices (id),
    amount     numeric(20,4) NOT NULL,
    currency   text          NOT NULL,
    method     text          NOT NULL,
    reference  text          NOT NULL,
    paid_at    timestamptz   NOT NULL
);
