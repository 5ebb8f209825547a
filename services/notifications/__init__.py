"""Notifications: who is who, routing by role, templates, SMTP delivery (R9-R13)."""
