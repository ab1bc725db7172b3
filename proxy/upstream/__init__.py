"""Talking to the vendor: the pooled client, the relay, and its policies."""
