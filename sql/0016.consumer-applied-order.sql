-- depends: 0015.personal-data-keys
-- A Kafka consumer group's progress in the store's own order (docs/event-bus.md,
-- "Lag"). Each partition's row records the (transaction_id, position) up to
-- which its events are applied: the last event applied from it, or, when its member
-- found it read to its end (asked of the broker), the relay's checkpoint read just
-- before. The events the relay published after the smallest of these, over a group's
-- partitions, are what the group may not have applied yet. It replaces a comparison of
-- the events' creation times with the time of the last record, which missed an event
-- created before a member recorded itself idle and published after (the relay publishes
-- some milliseconds after the commit): the status said "caught up" while the event was
-- still on its way.
ALTER TABLE bus_consumer_lag
    ADD COLUMN applied_transaction_id XID8   NOT NULL DEFAULT '0',
    ADD COLUMN applied_position       BIGINT NOT NULL DEFAULT 0;
