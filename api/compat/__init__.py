"""The compatibility surface: a public load test's own routes over the platform's
commands and queries (`api.compat.routes`)."""
