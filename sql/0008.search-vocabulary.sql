-- depends: 0007.bus-consumer-lag
-- Search on PostgreSQL that stays fast while the read model is written (docs/read-side.md,
-- "Search on PostgreSQL"; measurements in docs/benchmarks.md):
--
-- * Fuzzy matching goes through a vocabulary of the words the read model holds (a few
--   hundred for realistic names, one row per distinct word however many warriors share
--   it) instead of trigram indexes over every row: a typo is matched against the words,
--   then the close words are looked up as exact lexemes. The two trigram GIN indexes over
--   every name and skill list cost every write and made random terms scan thousands of
--   posting lists; they go.
-- * Names get a full-text vector of their own, so "names matching the term" is an index
--   lookup (a weight-restricted query on the combined vector cannot use the index for
--   the weight and rechecked every row of a common skill).
-- * GIN indexes without the pending list (fastupdate = off): with it, every write of a
--   steady load sat in an unindexed list that every search scanned linearly until the
--   next vacuum (11,594 pending rows measured after 11.6k API creations: 27-119 ms a
--   search). Each insert now updates the index itself, a cost of the projector's.
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;

ALTER TABLE warriors_read_model
    ADD COLUMN name_vector TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', warriors_fold(name))) STORED;

CREATE INDEX warriors_read_model_name_vector_idx ON warriors_read_model
    USING GIN (name_vector) WITH (fastupdate = off);

DROP INDEX warriors_read_model_name_trgm_idx;
DROP INDEX warriors_read_model_skills_trgm_idx;
ALTER TABLE warriors_read_model DROP COLUMN skills_folded;

ALTER INDEX warriors_read_model_search_idx SET (fastupdate = off);
DO $$ BEGIN PERFORM gin_clean_pending_list('warriors_read_model_search_idx'::regclass); END $$;

-- Every lexeme of `search_vector` that the read model ever held. Only the read-model
-- projection writes it (in the statement that upserts the rows); words of deleted or
-- renamed warriors stay, which costs a fuzzy lookup a candidate that matches nothing.
CREATE TABLE search_words (
    word TEXT PRIMARY KEY
);

-- Fuzzy lookups take the words with the term's first letter and a length within the
-- allowed edits (then Levenshtein on those few).
CREATE INDEX search_words_initial_length_idx ON search_words (left(word, 1), length(word));

INSERT INTO search_words (word)
SELECT DISTINCT unnest(tsvector_to_array(search_vector)) FROM warriors_read_model
ON CONFLICT DO NOTHING;

-- The words a prefix begins (`LIKE 'ka%'`), in any collation.
CREATE INDEX search_words_prefix_idx ON search_words (word text_pattern_ops);
