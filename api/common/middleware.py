"""Pure ASGI middleware shared by the services: body size limit, correlation ids and
request metrics. Pure ASGI (not BaseHTTPMiddleware) keeps the per-request cost small."""

import re
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uuid_utils.compat import uuid7

from api.common.problems import problem

CORRELATION_HEADER = b"x-correlation-id"
_VALID_CORRELATION = re.compile(rb"[\x21-\x7e]{1,128}")

REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 to bodies over `max_bytes`, declared (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "Payload too large", f"The body must be at most {self.max_bytes} bytes.")
        await response(scope, receive, send)


class CorrelationAndMetrics:
    """Echo (or create) `X-Correlation-Id` and count every answer by route and status."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation = _correlation_id(scope)
        if correlation is None:
            bad = problem(400, "Bad request", "X-Correlation-Id must be 1-128 visible ASCII characters.")
            await bad(scope, receive, send)
            return
        scope.setdefault("state", {})["correlation_id"] = correlation.decode()
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (CORRELATION_HEADER, correlation)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_template(scope)
            LATENCY.labels(self.service, scope["method"], route).observe(time.perf_counter() - started)
            REQUESTS.labels(self.service, scope["method"], route, str(status)).inc()


def _correlation_id(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == CORRELATION_HEADER:
            return value if _VALID_CORRELATION.fullmatch(value) else None
    return str(uuid7()).encode()


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    # Unmatched paths share one label so a scan of random URLs cannot explode the series.
    return getattr(route, "path", "unmatched")
