"""Projections: read models kept from the event stream by one engine."""
