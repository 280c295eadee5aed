"""Traces with OpenTelemetry, end to end: a small OTLP/HTTP receiver on loopback stands for
the collector; the HTTP service, the relay and a Kafka-fed projector send it their spans;
one trace links the command, its append, the relay's publish and the projection's apply."""

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import LoggedProcess, ProjectorProcess, ServiceProcess, wait_for
from warriors.servers import free_port
from warriors.servers.kafka_broker import KafkaBroker

# (trace id, span name, service name, the span's string attributes)
Span = tuple[bytes, str, str, dict[str, str]]


class Receiver(ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps every span."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        request = ExportTraceServiceRequest.FromString(body)
        found: list[Span] = []
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    found.append((span.trace_id, span.name, service, attributes))
        with self.server.lock:
            self.server.spans.extend(found)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_trace_links_the_command_to_the_projections_apply(
    fresh_database: str, broker: KafkaBroker, receiver: Receiver
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s, not every 5 s
    }
    service = ServiceProcess(fresh_database, free_port(), env=env)
    relay = LoggedProcess(["-m", "warriors.cli", "relay"], {"DATABASE_URL": fresh_database, **env}, "relay")
    projector = ProjectorProcess(fresh_database, env=env)
    try:
        name = f"Traced {uuid.uuid4().hex[:8]}"
        answer = httpx.post(
            f"{service.base_url}/api/v1/commands/warriors",
            json={"name": name, "dob": "1990-01-01"},
            headers=service.headers,
        )
        assert answer.status_code == 202, answer.text
        warrior_id = answer.json()["id"]

        def the_trace() -> list[Span] | None:
            with receiver.lock:
                spans = list(receiver.spans)
            commands = [
                s
                for s in spans
                if s[1] == "warriors.command" and s[3].get("warriors.warrior_id") == warrior_id
            ]
            if not commands:
                return None
            trace = [s for s in spans if s[0] == commands[0][0]]
            names = {(s[1], s[2]) for s in trace}
            wanted = {
                ("warriors.command", "warriors-gateway"),
                ("warriors.append", "warriors-gateway"),
                ("warriors.relay.publish", "warriors-relay"),
                ("warriors.projection.apply", "warriors-projector"),
            }
            return trace if wanted <= names else None

        trace = wait_for(the_trace, timeout=90, what="one trace from the command to the projection's apply")
        # A new consumer group builds its sink from the store, then reads the topic: the
        # event may be applied (idempotently) twice, each time in the command's trace.
        applies = [s for s in trace if s[1] == "warriors.projection.apply"]
        assert {s[3]["warriors.projection"] for s in applies} == {"warriors_read_model"}
        assert {s[3]["warriors.event_type"] for s in applies} == {"WarriorCreated"}
    finally:
        projector.stop()
        relay.stop()
        service.stop()
