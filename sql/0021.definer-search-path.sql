-- depends: 0020.monitor-role
-- The functions that run with the owner's rights (SECURITY DEFINER) look names up in
-- pg_catalog only, and name their tables with their schema: their search path held
-- `public`, where warriors_projector may create objects (a rebuild makes its shadow table
-- there), so an object made there could be found first by a function running as the
-- owner. Replaced in place: the grants on them stay.
CREATE OR REPLACE FUNCTION expire_idempotency_keys(older_than interval, batch integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gone integer;
BEGIN
    IF older_than < interval '1 hour' THEN
        RAISE EXCEPTION 'idempotency keys are kept at least an hour (asked: %)', older_than;
    END IF;
    DELETE FROM public.idempotency_keys
    WHERE key IN (SELECT key FROM public.idempotency_keys WHERE created_at < now() - older_than
                  ORDER BY created_at LIMIT batch);
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END $$;

CREATE OR REPLACE FUNCTION erase_warrior_key(warrior uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.warrior_keys (warrior_id, wrapped_key, master_key_id, erased_at)
    VALUES (warrior, NULL, NULL, now())
    ON CONFLICT (warrior_id) DO UPDATE SET wrapped_key = NULL, master_key_id = NULL, erased_at = now();
    DELETE FROM public.event_snapshots WHERE aggregate_id = warrior;
    DELETE FROM public.idempotency_keys WHERE aggregate_id = warrior;
END $$;
