"""Application services: what a route does, as plain functions of a session and values."""
