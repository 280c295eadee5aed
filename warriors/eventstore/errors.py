"""The event store's own errors, and the one place database errors are translated."""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import PoolTimeout

APPEND_ONLY_SQLSTATE = "WA001"


class EventStoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(EventStoreError):
    """The database cannot be reached or is not answering; try again later."""


class AppendOnlyViolation(EventStoreError):
    """Something tried to UPDATE, DELETE or TRUNCATE the event store."""


def translate(exc: BaseException) -> BaseException:
    """The project's error for a driver error (or `exc` itself when there is none)."""
    # OperationalError covers a lost connection, a server shutting down or starting up.
    if isinstance(exc, PoolTimeout | psycopg.OperationalError | OSError):
        return StoreUnavailable(f"the event store is unavailable: {exc}")
    if isinstance(exc, psycopg.Error) and exc.sqlstate == APPEND_ONLY_SQLSTATE:
        return AppendOnlyViolation(str(exc))
    return exc


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise driver errors as the store's own errors."""
    try:
        yield
    except (psycopg.Error, PoolTimeout, OSError) as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc
