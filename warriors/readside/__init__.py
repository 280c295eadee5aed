"""Reading the read models: search terms, queries, consistency waits."""
