"""The shape every local server shares, and the process handling they have in common.

A local server is a real server process that `make run`, `make services`, the tests and
the benchmarks start on 127.0.0.1, with everything it keeps in one folder of its own
(`data_dir`): embedded PostgreSQL, a Kafka broker, an OpenSearch node, Redis. Each:

- `start()`: starts the server unless this folder's server already runs, waits until it
  is ready (`wait_ready`, bounded by a deadline) and returns the URL clients use;
- `wait_ready(deadline, pid)`: polls `probe()` until it reports ready, failing early if
  the process exits and with `probe()`'s last reason at the deadline;
- `running()`: whether this folder's server process is alive;
- `stop()`: a graceful stop (SIGTERM or the server's own tool), forced if it outlives
  its deadline (`terminate`);
- `destroy()`: stop it and remove its folder (the tests' clean-up).

The helpers below are the parts that were written four times before: a free port, a
detached process whose output goes to a file, whether a pid is (still) ours and alive, the
wait for an exit, SIGTERM-then-SIGKILL, one start or stop at a time per folder.
"""

import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import ClassVar

log = logging.getLogger("warriors.servers")

POLL_SECONDS = 0.1


class ServerError(RuntimeError):
    """A local server could not be started, did not get ready, or did not stop."""


class LocalServer(ABC):
    """A server process on loopback with its files in `data_dir` (see the module)."""

    #: How messages name it ("the Kafka broker", "OpenSearch", ...).
    display_name: ClassVar[str] = "the server"
    #: The error its failures raise (a ServerError subclass).
    error: ClassVar[type[ServerError]] = ServerError
    #: How often `wait_ready` asks `probe()`.
    poll_seconds: ClassVar[float] = POLL_SECONDS

    data_dir: Path

    @property
    @abstractmethod
    def log_file(self) -> Path:
        """Where the server logs (named in every error)."""

    @abstractmethod
    def start(self) -> str:
        """Start unless running, wait until ready; return the URL clients use."""

    @abstractmethod
    def running(self) -> bool:
        """Whether this folder's server process is alive (it may still be starting)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop this folder's server if it runs, gracefully first."""

    @abstractmethod
    def probe(self, deadline: float) -> str | None:
        """None when the server answers as ready; otherwise why not (for the error)."""

    def failure_detail(self) -> str:
        """More to say in an error than the log file's name (e.g. the log's last error)."""
        return ""

    def wait_ready(self, deadline: float, pid: int | None = None) -> None:
        """Until `probe()` reports ready; raises `error` if `pid` (when given) exits first,
        or with the last reason once `deadline` (time.monotonic()) has passed."""
        started = time.monotonic()
        while True:
            if pid is not None and not alive(pid):
                raise self.error(
                    f"{self.display_name} exited while starting; see {self.log_file}{self.failure_detail()}"
                )
            reason = self.probe(deadline)
            if reason is None:
                return
            if time.monotonic() >= deadline:
                raise self.error(
                    f"{self.display_name} was not ready within {time.monotonic() - started:.0f}s ({reason});"
                    f" see {self.log_file}{self.failure_detail()}"
                )
            pause(pid, self.poll_seconds)

    def destroy(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports free on 127.0.0.1 at the time of asking."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def accepts_connections(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def require_program(program: str, why: str, error: type[ServerError] = ServerError) -> str:
    """The path of `program` on PATH, else `error` saying why it is needed."""
    path = shutil.which(program)
    if path is None:
        raise error(f"`{program}` is not on PATH: {why}")
    return path


# The servers this process started, kept so that their exit is reaped (a zombie would look
# alive) and waited on directly.
_CHILDREN: dict[int, "subprocess.Popen[bytes]"] = {}


def spawn(
    command: Sequence[str],
    output_file: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    gid: int | None = None,
    banner: bool = False,
) -> int:
    """Start `command` detached, in a session of its own (a Ctrl-C meant for whoever
    started it does not stop it; it may outlive a `start` from a script), its output
    appended to `output_file` (after a line naming the command, with `banner`), as the
    user `uid`/`gid` when given. Returns its pid."""
    with output_file.open("ab") as output:
        if banner:
            output.write(f"\n=== starting: {' '.join(command)}\n".encode())
            output.flush()
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
        )
    _CHILDREN[process.pid] = process
    return process.pid


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has exited, whoever still has to reap it)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def pause(pid: int | None, seconds: float) -> None:
    """Wait `seconds`, returning early if `pid` is a child of this process and exits."""
    child = _CHILDREN.get(pid) if pid is not None else None
    if child is not None:
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=seconds)
    else:
        time.sleep(seconds)  # a poll interval, always bounded by its caller's deadline


def wait_for_exit(pid: int, deadline: float, poll_seconds: float = POLL_SECONDS) -> bool:
    """Until `pid` has exited (True) or `deadline` (time.monotonic()) has passed (False)."""
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        pause(pid, poll_seconds)
    return True


def terminate(
    pid: int,
    *,
    name: str,
    timeout: float,
    kill_timeout: float,
    error: type[ServerError] = ServerError,
    log_file: Path | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """SIGTERM `pid` and wait up to `timeout` for it to exit; then SIGKILL and wait up to
    `kill_timeout`, raising `error` if it survives even that."""
    see = f" (see {log_file})" if log_file is not None else ""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for_exit(pid, time.monotonic() + timeout, poll_seconds):
        return
    log.warning("%s (pid %d) outlived SIGTERM by %.0fs: SIGKILL%s", name, pid, timeout, see)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_for_exit(pid, time.monotonic() + kill_timeout, poll_seconds):
        raise error(f"{name} (pid {pid}) survived SIGKILL{see}")


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def command_line_has(pid: int, *markers: bytes) -> bool:
    """Whether `pid`'s arguments include every one of `markers` (a guard against a pid the
    system has given to another process since the pid file was written)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(marker in arguments for marker in markers)


@contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """One start, stop or resolution at a time per folder, across processes (`path` is
    the lock file)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
