"""OpenTelemetry traces: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (then spans go to
that collector over OTLP/HTTP), and free when off (every helper returns at once).

One trace follows a command through the platform: the command's span and its append (in
the HTTP worker), the relay's publish and each projection's apply (in their processes).
The context crosses processes in W3C `traceparent` form, in the event's metadata (so it
survives the store, a replay and a rebuild) and in the Kafka message's headers.
"""

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from warriors.eventstore.records import StoredEvent

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None


def setup_tracing(endpoint: str | None, service: str) -> None:
    """Send this process's spans to `endpoint` (an OTLP/HTTP collector, e.g.
    http://127.0.0.1:4318) as `service`; nothing when `endpoint` is unset."""
    global _tracer
    if not endpoint:
        return
    # Imported only when tracing is on: the SDK and the exporter cost start-up time.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"warriors-{service}"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
    )
    _tracer = provider.get_tracer("warriors")


def enabled() -> bool:
    return _tracer is not None


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span around the block, child of the current one (nothing when tracing is off)."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield


def current_traceparent() -> dict[str, str]:
    """The current span's context as {"traceparent": ...} (empty when off or outside a span)."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def record_applied(name: str, projection: str, events: Iterable[StoredEvent], started_ns: int) -> None:
    """One span per event applied (or published) since `started_ns`, each in the trace of
    the command that stored it (its metadata's traceparent). Events stored untraced are
    left out: a rebuild of a million events makes no million root spans."""
    if _tracer is None:
        return
    ended = time.time_ns()
    for event in events:
        parent = _parent(event.metadata)
        if parent is None:
            continue
        attributes: dict[str, str | int] = {
            "warriors.projection": projection,
            "warriors.event_id": str(event.event_id),
            "warriors.event_type": event.event_type,
            "warriors.position": event.position,
        }
        _tracer.start_span(name, context=parent, start_time=started_ns, attributes=attributes).end(ended)


def _parent(metadata: Mapping[str, Any]) -> Context | None:
    traceparent = metadata.get(TRACEPARENT)
    if not isinstance(traceparent, str):
        return None
    return _PROPAGATOR.extract({TRACEPARENT: traceparent})
