"""Wiring: configuration, storage, the event feed, HTTP API, CLI and local service scripts."""
