-- depends: 0019.inline-read-model
-- The `monitor` role of API keys (issue 26, item 4): metrics, the projections' status and
-- readiness details, and nothing else (no warriors' data, no writes). Prometheus scrapes
-- with one; it used to need an operator key, which can also erase warriors.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('reader', 'writer', 'monitor', 'operator'));
