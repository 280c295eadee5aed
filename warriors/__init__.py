"""The warriors platform: domain, event store, projections and adapters."""
