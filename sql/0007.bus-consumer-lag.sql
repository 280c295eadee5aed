-- depends: 0006.statistics
-- Kafka consumer groups (one per projection when KAFKA_BOOTSTRAP_SERVERS is set) record,
-- after every batch, each partition's committed offset and end: their lag, which the
-- projections' status reports.
CREATE TABLE bus_consumer_lag (
    group_id    TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    committed   BIGINT      NOT NULL,
    end_offset  BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, partition)
);
