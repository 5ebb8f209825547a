"""The four services: ordering, invoicing, lifecycle and notifications."""
