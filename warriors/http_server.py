"""The command line that serves an ASGI app factory over HTTP with N worker processes:
one definition, used by `warriors run` and by the benchmarks' baselines, so that what
is measured is what runs.

uvicorn (with uvloop and httptools). granian was measured too (docs/benchmarks.md, "As
deployed"): a higher ceiling for a trivial app (+30%), but on the platform's own
endpoints within noise of uvicorn, and the projector fell further behind under writes
next to its worker threads; not worth a second server to support."""

import sys


def serve_command(factory: str, host: str, port: int, workers: int) -> list[str]:
    """uvicorn serving `factory` ("module:function" returning the app) with `workers`
    processes (a worker that dies is started again by uvicorn's supervisor); access
    logs off: the metrics count every request."""
    return [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--host", host, "--port", str(port),
        "--workers", str(workers), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
