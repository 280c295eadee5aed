-- depends: 0009.read-model-deletions
-- API keys (warriors/security): only each key's SHA-256 is stored. A revoked key stays
-- listed, with when it was revoked, so an event's `user_id` (api-key:<id>) can always be
-- traced to the key's name and role.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role        text NOT NULL CHECK (role IN ('reader', 'writer', 'operator')),
    key_digest  bytea NOT NULL UNIQUE CHECK (length(key_digest) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
