"""Bounds for tests that check an operation ends instead of hanging."""

HANG = 30.0
"""Seconds within which a call that must fail fast (bounded retries against an endpoint
nobody listens on, a lease expiry of a second or so) has to end in a test. Far above what
such a call takes (a few seconds with its retries' backoff, on a machine whose cores are
busy), far below a hang (connect timeouts of a minute, retries without end): a test
asserting it can tell the two apart under load."""
