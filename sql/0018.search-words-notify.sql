-- depends: 0017.rebuild-topic-ends
-- Each HTTP worker holds the search vocabulary in memory (warriors/readside/vocabulary.py)
-- to answer a term that can match nothing without a query. It LISTENs on `search_words`:
-- this trigger notifies the words each statement adds, one per line, or `*` (read the
-- table again) when they do not fit a notice's 8,000 bytes. Rows removed are not notified:
-- a word the worker keeps too long only sends a term to the database.
CREATE FUNCTION search_words_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    added text;
BEGIN
    SELECT string_agg(word, E'\n') INTO added FROM new_words;
    IF added IS NOT NULL THEN
        PERFORM pg_notify('search_words', CASE WHEN octet_length(added) > 7900 THEN '*' ELSE added END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER search_words_added
    AFTER INSERT ON search_words
    REFERENCING NEW TABLE AS new_words
    FOR EACH STATEMENT EXECUTE FUNCTION search_words_notify();
