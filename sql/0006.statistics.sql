-- depends: 0005.read-model
-- Statistics for analytics users.
--
-- 1. The statistics materialized view now reads the read model through a SQL function.
--    A function body is resolved by name when it runs, so the view does not pin the
--    read-model table: the blue/green rebuild can swap a new table in by renaming, and
--    the next refresh reads it. (A view over the table itself would keep reading the
--    retired table, and block dropping it.) The name is schema-qualified: PostgreSQL 17+
--    runs materialized-view maintenance with search_path = pg_catalog, pg_temp.
DROP MATERIALIZED VIEW warrior_statistics;

CREATE FUNCTION warrior_statistics_rows()
RETURNS TABLE (day date, warriors_created bigint, avg_skills float8)
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('day', created_at, 'UTC')::date, count(*), avg(cardinality(fight_skills))::float8
    FROM public.warriors_read_model
    GROUP BY 1
$$;

CREATE MATERIALIZED VIEW warrior_statistics AS SELECT * FROM warrior_statistics_rows();
CREATE UNIQUE INDEX warrior_statistics_day_idx ON warrior_statistics (day);

-- 2. Daily statistics, one partition (day) at a time, computed with pandas by the Dagster
--    asset `daily_warrior_statistics` from the WarriorCreated events of that day (UTC).
--    Events are never changed, so a day's rows are final and a backfill is repeatable.
CREATE TABLE daily_warrior_creations (
    day               DATE        PRIMARY KEY,
    warriors_created  INTEGER     NOT NULL CHECK (warriors_created >= 0),
    avg_skills        FLOAT8,
    computed_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE daily_skill_popularity (
    day       DATE    NOT NULL,
    skill     TEXT    NOT NULL,
    warriors  INTEGER NOT NULL CHECK (warriors > 0),
    PRIMARY KEY (day, skill)
);

-- Age on the day of creation, in bands of ten years: [age_from, age_to].
CREATE TABLE daily_age_distribution (
    day       DATE    NOT NULL,
    age_from  INTEGER NOT NULL,
    age_to    INTEGER NOT NULL,
    warriors  INTEGER NOT NULL CHECK (warriors > 0),
    PRIMARY KEY (day, age_from)
);

-- The daily statistics read one day of events. A BRIN index on created_at costs the
-- append path almost nothing (events arrive in time order) and spares a full scan per day.
CREATE INDEX event_store_created_at_brin ON event_store USING brin (created_at);
