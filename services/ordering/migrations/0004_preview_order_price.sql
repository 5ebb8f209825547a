-- Issue 11 (preview): every paid order is priced here (R18-R20) and keeps what the buyer was
-- shown: the price (an OrderPrice contract as JSON) and the term's dates (R23).
ALTER TABLE orders ADD COLUMN price jsonb;
ALTER TABLE orders ADD COLUMN renews_at timestamptz;
ALTER TABLE orders ADD COLUMN expires_at timestamptz;
ALTER TABLE orders ADD COLUMN time_zone text;

-- R19: a projection of invoicing's applied rates (ExchangeRateApplied), to price orders with.
CREATE TABLE applied_rates (
    currency       text          NOT NULL,
    channel        text          NOT NULL,
    effective_from timestamptz   NOT NULL,
    rate           numeric(20,8) NOT NULL,
    PRIMARY KEY (currency, channel, effective_from)
);
