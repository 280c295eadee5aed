-- depends: 0018.search-words-notify
-- A creation's read-model row is written by the API in the statement that appends its
-- event (warriors/projections/inline.py; INLINE_READ_MODEL, PostgreSQL mode): the API
-- inserts rows (never updates or deletes them: the projector does every other change),
-- adds their words to the search vocabulary and counts them. A blue/green rebuild copies
-- the live table's grants to its shadow, so the grant survives a swap.
GRANT INSERT ON warriors_read_model, search_words TO warriors_api;
GRANT UPDATE ON warrior_count TO warriors_api;
