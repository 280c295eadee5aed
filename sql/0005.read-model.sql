-- depends: 0004.projection-offsets
-- The PostgreSQL read side: the warriors read model with its search columns, the exact
-- count, parked (dead-lettered) events, and the statistics materialized view.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Search folding: lower case, accents removed (`José` -> `jose`). unaccent() is only
-- STABLE (it reads a dictionary), so indexes and generated columns need this IMMUTABLE
-- wrapper that names its dictionary.
CREATE FUNCTION warriors_fold(text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, $1)) $$;

-- array_to_string() is STABLE, which generated columns refuse (the seed's table would not
-- have been created); for text[] it is immutable in fact.
CREATE FUNCTION warriors_skills_text(text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(array_to_string($1, ' '), '') $$;

CREATE TABLE warriors_read_model (
    id              UUID         PRIMARY KEY,
    name            VARCHAR(100) NOT NULL,
    dob             DATE         NOT NULL,
    fight_skills    TEXT[]       NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ  NOT NULL,
    updated_at      TIMESTAMPTZ  NOT NULL,
    version         INTEGER      NOT NULL,
    name_folded     TEXT GENERATED ALWAYS AS (warriors_fold(name)) STORED,
    skills_folded   TEXT GENERATED ALWAYS AS (warriors_fold(warriors_skills_text(fight_skills))) STORED,
    -- Name weighted over skills (A over B); the 'simple' configuration: no stemming, so
    -- that what is indexed is what the folding and synonyms expect.
    search_vector   TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', warriors_fold(name)), 'A')
        || setweight(to_tsvector('simple', warriors_fold(warriors_skills_text(fight_skills))), 'B')
    ) STORED
);

CREATE INDEX warriors_read_model_search_idx ON warriors_read_model USING GIN (search_vector);
CREATE INDEX warriors_read_model_name_trgm_idx ON warriors_read_model USING GIN (name_folded gin_trgm_ops);
CREATE INDEX warriors_read_model_skills_trgm_idx ON warriors_read_model USING GIN (skills_folded gin_trgm_ops);
CREATE INDEX warriors_read_model_suggest_idx ON warriors_read_model (name_folded text_pattern_ops);
CREATE INDEX warriors_read_model_newest_idx ON warriors_read_model (created_at DESC, id DESC);
CREATE INDEX warriors_read_model_dob_idx ON warriors_read_model (dob);

-- The exact count, kept by the read-model projection in the same transaction as its rows.
CREATE TABLE warrior_count (
    singleton   BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    total       BIGINT  NOT NULL CHECK (total >= 0)
);
INSERT INTO warrior_count (total) VALUES (0);

-- Events a projection could not apply and an operator parked, so the rest could go on.
CREATE TABLE projection_parked_events (
    projection_name TEXT        NOT NULL,
    event_id        UUID        NOT NULL,
    position        BIGINT      NOT NULL,
    error           TEXT        NOT NULL,
    parked_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection_name, event_id)
);

-- The seed's statistics view, with the unique index REFRESH ... CONCURRENTLY needs.
CREATE MATERIALIZED VIEW warrior_statistics AS
SELECT date_trunc('day', created_at, 'UTC')::date AS day,
       count(*)                                    AS warriors_created,
       avg(cardinality(fight_skills))::float8       AS avg_skills
FROM warriors_read_model
GROUP BY 1;

CREATE UNIQUE INDEX warrior_statistics_day_idx ON warrior_statistics (day);

-- Called by the scheduled refresh (Dagster); readers are never blocked by it.
CREATE FUNCTION refresh_warrior_statistics() RETURNS void
LANGUAGE sql AS $$ REFRESH MATERIALIZED VIEW CONCURRENTLY warrior_statistics $$;
