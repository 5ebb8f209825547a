"""Ordering: accounts, users and roles, orders (R1-R8, R14-R17)."""
