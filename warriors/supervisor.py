"""`warriors run`'s supervisor: honcho's processes and prefixed output, plus restarts.

honcho (a small, well-kept Procfile runner) runs each process in a session of its own and
multiplexes their output, but stops everything as soon as any one exits: a projector
killed by the OOM killer took the whole platform down. This loop keeps honcho's pieces
(Process, Printer, ProcessManager) and changes that one rule: a process that exits while
the platform runs is started again after a backoff (1 s doubling to 30 s), at most
`max_restarts` times within `window_seconds`; past that, a process that never ran for
`settle_seconds` (it cannot start: a port taken, a bad setting) stops the platform, which
says which process; one that ran before (a projector crash-looping on a sink's fault) is
called failing and restarted on, every `max_backoff_seconds` at most, while the others
(the API above all) keep serving. Whatever the dead process left in its process group (the
workers of a killed uvicorn master) is killed before the restart, so the new one finds
its port free. Ctrl-C or SIGTERM stops every process: SIGTERM to each process group,
SIGKILL after `kill_wait` seconds.

No process outlives the supervisor, even one killed with SIGKILL (which no handler sees):
each process's runner asks the kernel for a signal when the supervisor dies
(PR_SET_PDEATHSIG) and then stops its process's whole group, SIGTERM and SIGKILL after
ORPHAN_KILL_WAIT seconds. A Dagster code server once kept running, orphaned, after half
the stops of `make run`.

(supervisord restarts too, but prints its children's output unprefixed or to files.)
"""

import contextlib
import ctypes
import datetime
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from honcho.colour import get_colours
from honcho.compat import ProcessManager
from honcho.printer import Message, Printer
from honcho.process import Process

SYSTEM = "supervisor"
MAX_BACKOFF_SECONDS = 30.0
# The supervisor died: each runner stops its process's group, SIGKILL after this long.
ORPHAN_KILL_WAIT = 5.0
_ORPHANED = signal.SIGUSR1  # what the kernel sends a runner when the supervisor dies
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class _Process(Process):  # type: ignore[misc]  # honcho has no type hints
    """honcho's Process (pinned, 2.0.0), reporting its exit when the process exits.

    honcho reports it once the output pipe closes, which never happens while something
    the dead process started (a uvicorn master's workers) still holds the pipe."""

    def run(
        self, events: "multiprocessing.Queue[Message] | None" = None, ignore_signals: bool = False
    ) -> None:
        self._events = events
        self._child: subprocess.Popen[bytes] | None = None
        self._orphaned = False
        _die_with_parent(self._stop_orphaned)
        self._child = self._child_ctor(self.cmd, env=self.env, cwd=self.cwd)
        if self._orphaned or _parent_gone():  # the supervisor died while it was starting
            self._stop_orphaned()
        self._send_message({"pid": self._child.pid}, type="start")
        if ignore_signals:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reader = threading.Thread(target=self._relay_output, daemon=True)
        reader.start()
        self._child.wait()
        reader.join(timeout=1.0)  # the rest of its output, unless its leftovers hold the pipe
        self._send_message({"returncode": self._child.returncode}, type="stop")

    def _stop_orphaned(self) -> None:
        """The supervisor is dead: the process's group is stopped and this runner exits."""
        child = self._child
        if child is None:  # not started yet: run() stops it as soon as it is
            self._orphaned = True
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + ORPHAN_KILL_WAIT
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # a grace period before SIGKILL, not a synchronisation
        with contextlib.suppress(ProcessLookupError):  # whatever is left in its group too
            os.killpg(child.pid, signal.SIGKILL)
        os._exit(1)

    def _relay_output(self) -> None:
        assert self._child is not None
        assert self._child.stdout is not None
        for line in iter(self._child.stdout.readline, b""):
            if not self.quiet:
                self._send_message(line)


def _die_with_parent(stop: "Callable[[], None]") -> None:
    """Call `stop` when the process that started this one (the supervisor) dies, however
    it dies: the kernel signals it (Linux; elsewhere nothing is done). Set up before the
    child starts, and checked once after, so that a death in between is not missed."""
    if not sys.platform.startswith("linux"):
        return
    signal.signal(_ORPHANED, lambda _signum, _frame: stop())
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(_ORPHANED), 0, 0, 0)
    if _parent_gone():
        stop()


def _parent_gone() -> bool:
    parent = multiprocessing.parent_process()
    return parent is not None and os.getppid() != parent.pid


@dataclass
class _Child:
    process: Process
    pid: int | None = None
    running: bool = False
    exits: list[float] = field(default_factory=list)  # monotonic times of its unexpected exits
    restart_at: float | None = None
    started_at: float = 0.0  # monotonic time of its latest start
    settled: bool = False  # it once ran for settle_seconds: it can start, whatever fails later


class Supervisor:
    def __init__(
        self,
        printer: Printer,
        *,
        max_restarts: int = 5,
        window_seconds: float = 300.0,
        first_backoff_seconds: float = 1.0,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
        settle_seconds: float = 60.0,
        kill_wait: float = 10.0,
    ) -> None:
        self.printer = printer
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self.first_backoff_seconds = first_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.settle_seconds = settle_seconds
        self.kill_wait = kill_wait
        self.returncode: int | None = None
        self._events: multiprocessing.Queue[Message] = multiprocessing.Queue()
        self._children: dict[str, _Child] = {}
        self._colours = get_colours()
        self._groups = ProcessManager()
        self._stopping_since: float | None = None

    def add_process(
        self, name: str, cmd: str, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> None:
        assert name not in self._children, "process names must be unique"
        process = _Process(cmd, name=name, colour=next(self._colours), env=env, cwd=cwd)
        self._children[name] = _Child(process)
        self.printer.width = max(self.printer.width, len(name), len(SYSTEM))

    def loop(self) -> int:
        """Run until stopped (a signal, or a process that keeps failing); the exit code."""

        def stop_on(signum: int, _: FrameType | None) -> None:
            self._say(f"{signal.Signals(signum).name} received, stopping")
            self._stop(128 + signum)

        signal.signal(signal.SIGINT, stop_on)
        signal.signal(signal.SIGTERM, stop_on)
        for name in self._children:
            self._start(name)
        while True:
            with contextlib.suppress(queue.Empty):
                self._handle(self._events.get(timeout=0.1))
            now = time.monotonic()
            if self._stopping_since is None:
                for name, child in self._children.items():
                    if child.restart_at is not None and now >= child.restart_at:
                        child.restart_at = None
                        self._start(name)
            elif not any(c.running for c in self._children.values()):
                return self.returncode or 0
            elif now - self._stopping_since > self.kill_wait:
                self._signal_all(force=True)
                self._stopping_since = now  # and again after another kill_wait, if need be

    def _start(self, name: str) -> None:
        child = self._children[name]
        child.running = True
        child.started_at = time.monotonic()
        runner = multiprocessing.Process(name=name, target=child.process.run, args=(self._events, True))
        runner.start()

    def _handle(self, message: Message) -> None:
        child = self._children.get(message.name)
        if message.type == "line" or child is None:
            self.printer.write(message)
        elif message.type == "start":
            child.pid = message.data["pid"]
            self._say(f"{message.name} started (pid {child.pid})")
            if self._stopping_since is not None:  # started while the platform was stopping
                self._groups.terminate(child.pid)
        elif message.type == "stop":
            self._stopped(message.name, child, message.data["returncode"])

    def _stopped(self, name: str, child: _Child, returncode: int) -> None:
        child.running = False
        if self._stopping_since is not None:
            self._say(f"{name} stopped (exit code {returncode})")
            return
        if child.pid is not None:  # what it left behind in its process group
            self._groups.kill(child.pid)
        now = time.monotonic()
        child.settled = child.settled or now - child.started_at >= self.settle_seconds
        child.exits = [t for t in child.exits if now - t < self.window_seconds] + [now]
        failing = len(child.exits) > self.max_restarts
        if failing and not child.settled:
            self._say(
                f"{name} exited (exit code {returncode}) {len(child.exits)} times in"
                f" {self.window_seconds:.0f}s and never ran {self.settle_seconds:.0f}s: it cannot start;"
                " stopping the platform"
            )
            self._stop(1)
            return
        backoff = min(self.first_backoff_seconds * 2 ** (len(child.exits) - 1), self.max_backoff_seconds)
        child.restart_at = now + backoff
        if failing:  # it ran before: the others (the API) keep serving, and it is tried again
            self._say(
                f"{name} keeps failing (exit code {returncode}, {len(child.exits)} exits in"
                f" {self.window_seconds:.0f}s); the others go on, restarting it in {backoff:.1f}s"
            )
            return
        self._say(
            f"{name} exited unexpectedly (exit code {returncode}); restarting in {backoff:.1f}s"
            f" (restart {len(child.exits)} of at most {self.max_restarts} in {self.window_seconds:.0f}s"
            " before it is called failing)"
        )

    def _stop(self, returncode: int) -> None:
        if self._stopping_since is not None:
            return
        self.returncode = returncode
        self._stopping_since = time.monotonic()
        self._signal_all(force=False)

    def _signal_all(self, *, force: bool) -> None:
        for name, child in self._children.items():
            if child.running and child.pid is not None:
                self._say(f"sending {'SIGKILL' if force else 'SIGTERM'} to {name} (pid {child.pid})")
                (self._groups.kill if force else self._groups.terminate)(child.pid)

    def _say(self, text: str) -> None:
        now = datetime.datetime.now()
        self.printer.write(Message(type="line", data=f"{text}\n", time=now, name=SYSTEM, colour=None))
