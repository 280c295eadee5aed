-- depends: 0001.event-store
-- Aggregate snapshots (the seed's event_snapshots). Loading an aggregate reads its latest
-- snapshot and only the events after it. Snapshots are a cache: deleting them is safe.
CREATE TABLE event_snapshots (
    aggregate_id    UUID        NOT NULL,
    aggregate_type  TEXT        NOT NULL,
    version         INTEGER     NOT NULL CHECK (version > 0),
    schema_version  SMALLINT    NOT NULL DEFAULT 1,
    state           JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_id, version)
);
