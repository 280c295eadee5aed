-- depends: 0001.event-store
-- Projection checkpoints (the seed's projection_offsets, corrected): a checkpoint is the
-- pair (transaction_id, position) of the last event applied, because the gap-safe reader
-- orders the stream by that pair. Lag is kept in events and in seconds.
CREATE TABLE projection_offsets (
    projection_name     TEXT        PRIMARY KEY,
    last_transaction_id XID8        NOT NULL DEFAULT '0',
    last_position       BIGINT      NOT NULL DEFAULT 0,
    last_processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    lag_events          BIGINT      NOT NULL DEFAULT 0,
    lag_seconds         DOUBLE PRECISION NOT NULL DEFAULT 0,
    status              TEXT        NOT NULL DEFAULT 'RUNNING'
        CHECK (status IN ('RUNNING', 'CATCHING_UP', 'REBUILDING', 'FAILED', 'STOPPED')),
    last_error          TEXT,
    failed_event_id     UUID
);
