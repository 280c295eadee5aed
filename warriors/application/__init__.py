"""Use cases: the glue between the pure domain and the event store."""
