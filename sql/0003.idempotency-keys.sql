-- depends: 0001.event-store
-- Idempotency keys: the first successful answer to a command sent with an
-- `Idempotency-Key` header. The row is written in the same transaction as the command's
-- event, so a key is recorded if and only if its event is stored. The answer is rebuilt
-- from (aggregate_id, event_version) joined to the event store.
CREATE TABLE idempotency_keys (
    key             TEXT        PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint     TEXT        NOT NULL,
    aggregate_id    UUID        NOT NULL,
    event_version   INTEGER     NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
