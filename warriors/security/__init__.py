"""Who may do what: API keys, roles and the identities they give."""
