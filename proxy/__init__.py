"""auth-proxy: a local authenticating reverse proxy for vendor SaaS APIs."""

__version__ = "0.1.0"
