"""Lifecycle: terms and dates, stages, entitlements, timers (R23-R37)."""
