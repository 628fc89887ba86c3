"""Surfaces that call the answer service: HTTP API, console helpers, CLI."""
