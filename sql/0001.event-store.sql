-- The event store: the single source of truth, append-only.
--
-- Corrections to the seed plan's table:
-- * `position` (an identity column) orders the global stream; it replaces the seed's
--   BIGSERIAL `sequence_number`, but a reader must NOT tail it as "position > last":
--   concurrent transactions commit out of position order (see `transaction_id`).
-- * `transaction_id` records the writing transaction (xid8). The gap-safe reader hands out
--   only rows whose transaction is older than every transaction still running
--   (pg_snapshot_xmin), ordered by (transaction_id, position); see
--   warriors/eventstore/reader.py for the reasoning.
-- * No monthly partitioning: the seed's version was invalid SQL (no PARTITION BY, a primary
--   key without the partition key). One table with these indexes serves far beyond this
--   platform's volume; partitioning can be added later by position range.
-- * `schema_version` lets old event shapes be upcast when read, never rewritten in place.
CREATE TABLE event_store (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        UUID        NOT NULL,
    aggregate_id    UUID        NOT NULL,
    aggregate_type  TEXT        NOT NULL,
    event_type      TEXT        NOT NULL,
    event_version   INTEGER     NOT NULL CHECK (event_version > 0),
    schema_version  SMALLINT    NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    event_data      JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    transaction_id  XID8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT event_store_event_id_key UNIQUE (event_id),
    -- Optimistic concurrency: two writers cannot both append version N of one aggregate.
    CONSTRAINT event_store_aggregate_version_key UNIQUE (aggregate_id, event_version)
);

-- The gap-safe global read walks this index.
CREATE INDEX event_store_global_order_idx ON event_store (transaction_id, position);

-- Append-only, enforced by the database itself (a trigger also binds the table owner,
-- which REVOKE would not).
CREATE FUNCTION event_store_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_store is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'WA001',
              HINT = 'Record a new event instead of changing or removing a stored one.';
END;
$$;

CREATE TRIGGER event_store_no_update_delete
    BEFORE UPDATE OR DELETE ON event_store
    FOR EACH ROW EXECUTE FUNCTION event_store_refuse_change();

CREATE TRIGGER event_store_no_truncate
    BEFORE TRUNCATE ON event_store
    FOR EACH STATEMENT EXECUTE FUNCTION event_store_refuse_change();

-- No NOTIFY trigger here on purpose: pg_notify serialises the commits of every notifying
-- transaction; measured with pgbench at 64 clients, one-row inserts fell from ~10,000/s to
-- ~3,600/s with a statement-level NOTIFY trigger. The appender notifies once per
-- group-commit flush instead (warriors/eventstore/appender.py).
