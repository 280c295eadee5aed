-- depends: 0012.parked-discards
-- Bounded growth (docs/event-store.md, "Retention"): idempotency keys expire, and the
-- clean-up finds the old ones by this index rather than by reading the whole table.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- The clean-up runs in Dagster (as warriors_projector), which has no rights on the keys:
-- this function, owned by the owner, deletes only keys older than the window it is given
-- (never less than an hour), at most `batch` at a time (short transactions).
CREATE FUNCTION expire_idempotency_keys(older_than interval, batch integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    gone integer;
BEGIN
    IF older_than < interval '1 hour' THEN
        RAISE EXCEPTION 'idempotency keys are kept at least an hour (asked: %)', older_than;
    END IF;
    DELETE FROM idempotency_keys
    WHERE key IN (SELECT key FROM idempotency_keys WHERE created_at < now() - older_than
                  ORDER BY created_at LIMIT batch);
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END $$;
REVOKE ALL ON FUNCTION expire_idempotency_keys(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION expire_idempotency_keys(interval, integer) TO warriors_projector;
