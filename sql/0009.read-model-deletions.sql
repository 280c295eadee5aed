-- depends: 0008.search-vocabulary
-- The deletions the live read model has applied: a deleted warrior's row is gone, and
-- this says at which version. Fed from Kafka (no global checkpoint), `?position=` of a
-- deletion reads it to know the deletion was applied, not merely stored.
CREATE TABLE read_model_deletions (
    id      UUID    PRIMARY KEY,
    version INTEGER NOT NULL
);

-- The deletions already applied: deleted in the store, and gone from the read model.
INSERT INTO read_model_deletions (id, version)
SELECT e.aggregate_id, max(e.event_version)
FROM event_store e
WHERE e.event_type = 'WarriorDeleted'
  AND NOT EXISTS (SELECT 1 FROM warriors_read_model r WHERE r.id = e.aggregate_id)
GROUP BY e.aggregate_id;
