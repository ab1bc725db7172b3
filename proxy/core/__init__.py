"""The base layer: errors, clock, secret sources, host names. Imports no aiohttp."""
