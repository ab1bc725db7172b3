"""Sessions shared per set of credentials through the session store: single flight, expiry,
rejection and backoff rules."""
