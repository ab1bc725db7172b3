"""Development tools that run in the test command (not part of the package)."""
