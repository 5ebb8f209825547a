"""Invoicing: prices, VAT, invoices, payments (R7, R15, R18-R22, R25, R37, R39)."""
