"""The PostgreSQL event store: appends, aggregate loading, snapshots, idempotency keys
and the gap-safe read of the global stream."""
