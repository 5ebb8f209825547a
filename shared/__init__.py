"""Mechanisms the four services share: messaging, outbox, inbox, db, clock, auth, config.

Nothing in here knows a business rule of one service.
"""
