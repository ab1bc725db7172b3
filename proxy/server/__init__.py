"""The HTTP side: listeners, the request pipeline, admin endpoints, CONNECT, reload."""
