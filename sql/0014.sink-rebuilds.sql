-- depends: 0013.retention
-- A Kafka-fed sink (the Redis cache, the search index, the read model of a new consumer
-- group) rebuilt from the event store (docs/event-bus.md, "Guarantees and recovery"):
-- one row per projection, what its sink holds as far as the group members know.
--
-- * state 'rebuilding': a rebuild was asked for (a lost sink, a group that never
--   committed, records gone from the topic) and has not finished: the sink may be partial.
--   Its owner replays the store while holding a PostgreSQL advisory lock on its session
--   (warriors/bus/consumer.py says why a lock and not a lease): a row left 'rebuilding'
--   with nobody holding the lock is an abandoned rebuild, which any member takes over.
-- * state 'complete': the last rebuild replayed the whole store; the topic does the rest.
--
-- `replayed_*` is how far the current rebuild got (the projections' status reports the
-- events after it as lag, and a member taking over an abandoned rebuild resumes there).
CREATE TABLE sink_rebuilds (
    projection_name          TEXT        PRIMARY KEY,
    generation               BIGINT      NOT NULL,
    state                    TEXT        NOT NULL CHECK (state IN ('rebuilding', 'complete')),
    reason                   TEXT        NOT NULL,
    owner                    TEXT,
    requested_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at               TIMESTAMPTZ,
    finished_at              TIMESTAMPTZ,
    replayed_transaction_id  XID8        NOT NULL DEFAULT '0',
    replayed_position        BIGINT      NOT NULL DEFAULT 0,
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON sink_rebuilds TO warriors_projector;
GRANT SELECT ON sink_rebuilds TO warriors_api;
