-- depends: 0016.consumer-applied-order
-- The topic's end offsets (one per partition, by partition number) read by a sink
-- rebuild's owner just before its replay of the event store: every record before them
-- is of an event the replay reads. A consumer group that never committed reads each
-- partition from its earliest record; a finished rebuild covers it only while every
-- partition still starts at or before its end here (records after it, which the replay
-- may not have read, are all still on the topic). NULL: not known (the broker did not
-- answer), and then it does not cover.
ALTER TABLE sink_rebuilds ADD COLUMN topic_ends BIGINT[];
