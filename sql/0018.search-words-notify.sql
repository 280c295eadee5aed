-- depends: 0017.rebuild-topic-ends
-- Each HTTP worker holds the search vocabulary in memory (warriors/readside/vocabulary.py)
-- to answer a term that can match nothing without a query. It LISTENs on `search_words`:
-- this trigger notifies the words each statement adds, one per line, in as many notices as
-- needed to stay under a notice's 8,000 bytes (a rebuild adds thousands in a statement).
-- Rows removed are not notified: a word the worker keeps too long only sends a term to the
-- database.
CREATE FUNCTION search_words_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    chunk text := '';
    added text;
BEGIN
    FOR added IN SELECT word FROM new_words LOOP
        IF chunk <> '' AND octet_length(chunk) + octet_length(added) >= 7900 THEN
            PERFORM pg_notify('search_words', chunk);
            chunk := '';
        END IF;
        chunk := CASE WHEN chunk = '' THEN added ELSE chunk || E'\n' || added END;
    END LOOP;
    IF chunk <> '' THEN
        PERFORM pg_notify('search_words', chunk);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER search_words_added
    AFTER INSERT ON search_words
    REFERENCING NEW TABLE AS new_words
    FOR EACH STATEMENT EXECUTE FUNCTION search_words_notify();
