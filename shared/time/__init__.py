"""Time: the one clock ("now"), test clocks across the services, and the one calendar.

- ``clock``: ``Clock``, the only source of "now" (``SystemClock``, ``FrozenClock``).
- ``test_clocks``: the accounts that follow a test clock and the step protocol.
- ``calendar``: local-day arithmetic in a customer's time zone (R23), shared by every service.
"""
