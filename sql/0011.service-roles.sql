-- depends: 0010.api-keys
-- Least privilege (docs/security.md, "PostgreSQL roles"). Migrations run as the owner
-- of every table; the services connect as one of two roles, which this migration creates
-- without a login (`warriors db-roles` gives them one, with a password):
--
-- * warriors_api: the HTTP services. Appends to the event store and reads it, keeps
--   idempotency keys, reads the read models and API keys. It cannot UPDATE, DELETE or
--   TRUNCATE the event store, alter it or disable its triggers (only the owner can).
-- * warriors_projector: the projector, the relay and Dagster's runs. Reads the event
--   store; owns the read models (a blue/green rebuild renames tables and refreshes the
--   statistics view, which only an owner may do) and writes the projections' own tables.
--
-- Roles belong to the whole server, not to one database: creating them tolerates their
-- existing already (another database of the same server, a concurrent migration).
DO $$
BEGIN
    CREATE ROLE warriors_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$
BEGIN
    CREATE ROLE warriors_projector NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- A stuck statement or an open transaction left idle holds back every gap-safe reader
-- (they wait for older transactions to end): neither may last.
ALTER ROLE warriors_api SET statement_timeout = '10s';
ALTER ROLE warriors_api SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE warriors_projector SET statement_timeout = '300s';
ALTER ROLE warriors_projector SET idle_in_transaction_session_timeout = '60s';

GRANT USAGE ON SCHEMA public TO warriors_api, warriors_projector;
-- A rebuild creates its shadow table (then renames it live).
GRANT CREATE ON SCHEMA public TO warriors_projector;

-- The event store: appended to by the API, read by everyone, changed by no one.
GRANT SELECT, INSERT ON event_store TO warriors_api;
GRANT SELECT ON event_store TO warriors_projector;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO warriors_api;
GRANT SELECT ON api_keys TO warriors_api;

-- Snapshots: taken by Dagster's runs, read when a command loads its aggregate.
GRANT SELECT ON event_snapshots TO warriors_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON event_snapshots TO warriors_projector;

-- The projections' bookkeeping and the tables they fill.
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON
    projection_offsets, projection_parked_events, bus_consumer_lag, search_words,
    read_model_deletions, warrior_count,
    daily_warrior_creations, daily_skill_popularity, daily_age_distribution
TO warriors_projector;
GRANT SELECT ON
    projection_offsets, projection_parked_events, bus_consumer_lag, search_words,
    read_model_deletions, warrior_count,
    daily_warrior_creations, daily_skill_popularity, daily_age_distribution,
    warriors_read_model, warrior_statistics
TO warriors_api;

-- Owned by the projector: rebuilds rename the read model, refreshes need the view's owner.
ALTER TABLE warriors_read_model OWNER TO warriors_projector;
ALTER MATERIALIZED VIEW warrior_statistics OWNER TO warriors_projector;
