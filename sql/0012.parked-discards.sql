-- depends: 0011.service-roles
-- A parked event an operator decided never to apply is discarded with a reason: it stays
-- passed over by every replay and rebuild, and is no longer counted as waiting.
ALTER TABLE projection_parked_events
    ADD COLUMN discarded_at   timestamptz,
    ADD COLUMN discard_reason text CHECK (discard_reason IS NULL OR length(discard_reason) BETWEEN 1 AND 500);
