"""HTTP entry points that share one port (tests/test_cluster_topology.py): each is a
process of its own, uvicorn serving both APIs with one worker on a socket bound with
SO_REUSEPORT to the same 127.0.0.1 port as its siblings.

SO_REUSEPORT rather than a small reverse proxy in front, because:
- the kernel is the balancer: each listening socket gets a share of the new connections,
  and a process that dies takes its socket with it, so new connections go to the live
  ones at once, with no health check to wait for and no extra hop or process (a proxy on
  one machine would be one more thing to fail, and the thing the fault test kills is the
  entry point, not a proxy);
- what it costs is visible and measured: the requests in flight on the killed process,
  and the connections still queued on its socket, fail (reset); a client's keep-alive
  connection to it fails once. A proxy would retry a refused connection but not a request
  already sent (as HAProxy does in docker-compose, docs/deployment.md), so it could not
  hide those either.

    python -m tests.reuseport_http PORT
"""

import socket
import sys

import uvicorn

from tests.support import LoggedProcess, wait_for

# uvicorn's line once the app's lifespan started: the process accepts requests from then on.
READY = b"Application startup complete"


def reuse_port_socket(port: int) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:`port` alongside the other entry points' sockets."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class EntryPoint(LoggedProcess):
    """One entry-point process on the shared `port`, started and ready (its app started)."""

    def __init__(self, database_url: str, port: int, env: dict[str, str], name: str) -> None:
        super().__init__(
            ["-m", "tests.reuseport_http", str(port)], {"DATABASE_URL": database_url, **env}, name
        )
        wait_for(self._ready, timeout=60, what=f"the HTTP entry point {name} on port {port}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the entry point exited; see {self.log_path}")
        return READY in self.log_path.read_bytes()


def main() -> None:
    port = int(sys.argv[1])
    config = uvicorn.Config(
        "api.gateway:create_app", factory=True, access_log=False, log_level="info", workers=1
    )
    uvicorn.Server(config).run(sockets=[reuse_port_socket(port)])  # asyncio listens on it


if __name__ == "__main__":
    main()
