-- Issue 15: the account's billing identity (address, organisation number, VAT id) as the buyer
-- gave it, validated (services/ordering/billing_identity.py); published whole as
-- BillingDetailsChanged. NULL: not given yet.
ALTER TABLE accounts ADD COLUMN billing_details jsonb;
