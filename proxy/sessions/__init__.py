"""The session per route: single flight, expiry, lockout and backoff rules."""
