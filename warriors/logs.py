"""Logging for every process of the platform, configured in one place: readable text (the
default of `make run`) or one JSON object per line (`LOG_FORMAT=json`, the default in
compose), each line with the correlation id of the request or event it concerns.

The correlation id lives in a context variable: the HTTP middleware sets it for each
request, the projections for each event they log. The JSON formatter is a few lines over
orjson (already the platform's serializer) rather than another dependency.
"""

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

from warriors.eventstore.records import StoredEvent

CORRELATION_ID: ContextVar[str | None] = ContextVar("correlation_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(correlation)s"
# Libraries that log every HTTP request they make at INFO.
_CHATTY = ("opensearch", "elastic_transport", "httpx")


@contextmanager
def correlated(correlation_id: str | None) -> Iterator[None]:
    """Log lines inside carry `correlation_id`."""
    token = CORRELATION_ID.set(correlation_id)
    try:
        yield
    finally:
        CORRELATION_ID.reset(token)


def log_applied(log: logging.Logger, projection: str, events: "Iterable[StoredEvent]") -> None:
    """One DEBUG line per event a projection applied (the relay: published), each with the
    correlation id of the request that stored it."""
    for event in events:
        with correlated(event.metadata.get("correlation_id")):
            log.debug("%s applied %s %s of warrior %s (version %s, position %s)", projection,
                      event.event_type, event.event_id, event.aggregate_id, event.event_version,
                      event.position)  # fmt: skip


class CorrelationFilter(logging.Filter):
    """Adds `correlation_id` (and, for the text format, ` [correlation_id=...]`) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        correlation_id = CORRELATION_ID.get()
        record.correlation_id = correlation_id
        record.correlation = f" [correlation_id={correlation_id}]" if correlation_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    correlation_id when there is one, the process's role, and the exception if any."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
        }
        if correlation_id := getattr(record, "correlation_id", None):
            line["correlation_id"] = correlation_id
        if run_id := (getattr(record, "dagster_meta", None) or {}).get("run_id"):  # a Dagster run's line
            line["run_id"] = run_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class PathOnlyAccessLog(logging.Filter):
    """uvicorn's access lines without their query strings: a search term is often a
    person's name, and an access log must not keep what an erasure removes everywhere else
    (docs/event-store.md, Erasure). The path, method and status stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


class _PlatformHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs (and replaces when called again)."""


def configure_logging(log_format: str, level: str, process: str) -> None:
    """Send every logger's records (uvicorn's and the libraries' included) to one handler
    on standard error, in `log_format` ("text" or "json") from `level` up."""
    handler = _PlatformHandler()
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonFormatter(process) if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PlatformHandler)]:  # others stay (pytest's)
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own handlers go
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, PathOnlyAccessLog) for f in access.filters):
        access.addFilter(PathOnlyAccessLog())
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
