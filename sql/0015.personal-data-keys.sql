-- depends: 0013.retention
-- Crypto-shredding (docs/event-store.md, "Erasure"). Each warrior's personal fields are
-- sealed in its events with a key of its own; the key is kept here, wrapped by the
-- services' master key (never stored in the database). Erasing a warrior destroys its
-- key: the row stays, with wrapped_key null, as the redaction record that readers honour
-- for events written before keys existed (schema version 1, plain text).
CREATE TABLE warrior_keys (
    warrior_id     UUID        PRIMARY KEY,
    wrapped_key    BYTEA,
    master_key_id  TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    erased_at      TIMESTAMPTZ,
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL)),
    CHECK ((wrapped_key IS NULL) = (master_key_id IS NULL))
);

-- The only way to destroy a key, and with it what else the store keeps about the person
-- outside the events: their snapshots (states in plain text before version 2, sealed
-- since) and the idempotency keys of their commands (fingerprints of request bodies).
-- Owned by the owner: the API role may call it but has no UPDATE or DELETE on the keys.
CREATE FUNCTION erase_warrior_key(warrior uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO warrior_keys (warrior_id, wrapped_key, master_key_id, erased_at)
    VALUES (warrior, NULL, NULL, now())
    ON CONFLICT (warrior_id) DO UPDATE SET wrapped_key = NULL, master_key_id = NULL, erased_at = now();
    DELETE FROM event_snapshots WHERE aggregate_id = warrior;
    DELETE FROM idempotency_keys WHERE aggregate_id = warrior;
END $$;
REVOKE ALL ON FUNCTION erase_warrior_key(uuid) FROM PUBLIC;

GRANT SELECT, INSERT ON warrior_keys TO warriors_api;
GRANT EXECUTE ON FUNCTION erase_warrior_key(uuid) TO warriors_api;
GRANT SELECT ON warrior_keys TO warriors_projector;
