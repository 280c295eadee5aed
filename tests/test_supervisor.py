"""warriors/supervisor.py with real processes: a child that dies is started again (what it
left in its process group killed first), one that keeps dying stops the platform with a
clear message, and a signal stops everything."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import wait_for

DRIVER = """
import os, sys
from honcho.printer import Printer
from warriors.supervisor import Supervisor
supervisor = Supervisor(Printer(sys.stdout), max_restarts=int(sys.argv[1]), window_seconds=60,
                        first_backoff_seconds=0.05, max_backoff_seconds=0.2,
                        settle_seconds=float(os.environ.get("SETTLE_SECONDS", "60")), kill_wait=5)
for spec in sys.argv[2:]:
    name, command = spec.split("=", 1)
    supervisor.add_process(name, command)
sys.exit(supervisor.loop())
"""


def supervise(
    tmp_path: Path, max_restarts: int, *processes: str, settle_seconds: float = 60.0
) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "supervisor.log"
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(max_restarts), *processes],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "SETTLE_SECONDS": str(settle_seconds)},
    )  # fmt: skip
    return process, log


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def read_pid(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text.isdigit() else None


def test_a_killed_process_is_restarted_and_its_leftovers_killed(tmp_path: Path) -> None:
    worker_pid = tmp_path / "worker.pid"
    # A "server" whose child (like a uvicorn worker) would outlive it if nobody cleaned up.
    server = f"sleep 300 & echo $! > {worker_pid}; exec sleep 300"
    steady = "exec sleep 300"
    process, log = supervise(tmp_path, 3, f"server={server}", f"steady={steady}")
    try:
        first_worker = wait_for(lambda: read_pid(worker_pid), timeout=20, what="the server's worker")
        wait_for(lambda: "server started (pid " in log.read_text(), what="the server's start")
        server_pid = int(log.read_text().split("server started (pid ")[1].split(")")[0])
        os.kill(server_pid, signal.SIGKILL)
        wait_for(lambda: "server exited unexpectedly (exit code -9" in log.read_text() or
                 "server exited unexpectedly (exit code 137" in log.read_text(),
                 timeout=20, what="the supervisor to notice")  # fmt: skip
        second_worker = wait_for(
            lambda: (pid := read_pid(worker_pid)) != first_worker and pid, timeout=20, what="the restart"
        )
        assert alive(second_worker)
        wait_for(lambda: not alive(first_worker), timeout=10, what="the dead server's worker to be killed")
        assert process.poll() is None, "the platform must keep running"
        assert log.read_text().count("steady started") == 1, "the others are left alone"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 128 + signal.SIGINT
    output = log.read_text()
    assert "SIGINT received, stopping" in output
    assert not alive(second_worker)


def test_a_process_that_keeps_dying_stops_the_platform(tmp_path: Path) -> None:
    process, log = supervise(tmp_path, 2, "broken=echo no luck; exit 3", "steady=exec sleep 300")
    assert process.wait(timeout=60) == 1
    output = log.read_text()
    assert output.count("no luck") == 3  # the first start and two restarts
    assert "broken exited (exit code 3) 3 times in 60s and never ran 60s: it cannot start;" in output
    assert "stopping the platform" in output
    assert "steady stopped" in output


def test_a_process_that_ran_and_then_keeps_failing_is_restarted_on_while_the_others_serve(
    tmp_path: Path,
) -> None:
    """A projector crash-looping on a sink's fault stopped the whole platform after six
    exits, the API with it (issue 25, item 7). A process that once ran for settle_seconds
    can start: past max_restarts it is called failing and restarted on, and the others
    keep running; only Ctrl-C stops the platform."""
    ran = tmp_path / "ran"
    flaky = f"if [ -e {ran} ]; then echo failing again; exit 3; fi; touch {ran}; sleep 1; exit 3"
    process, log = supervise(tmp_path, 2, f"flaky={flaky}", "steady=exec sleep 300", settle_seconds=0.5)
    try:
        wait_for(lambda: log.read_text().count("failing again") >= 5, timeout=60,
                 what="the failing process to be restarted past max_restarts")  # fmt: skip
        assert process.poll() is None, "the platform must keep running"
        output = log.read_text()
        assert "flaky keeps failing (exit code 3, 3 exits in 60s); the others go on" in output
        assert "stopping the platform" not in output
        assert output.count("steady started") == 1
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 128 + signal.SIGINT


def test_nothing_outlives_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL reaches no handler: the supervisor's processes, each in a session of its own,
    kept running (a Dagster code server, orphaned, after half the stops of `make run`).
    Each runner learns of the supervisor's death from the kernel and stops its process's
    whole group."""
    worker_pid = tmp_path / "worker.pid"
    server = f"sleep 300 & echo $! > {worker_pid}; exec sleep 300"
    process, log = supervise(tmp_path, 3, f"server={server}", "steady=exec sleep 300")
    worker = wait_for(lambda: read_pid(worker_pid), timeout=20, what="the server's worker")
    wait_for(lambda: log.read_text().count(" started (pid ") == 2, timeout=20, what="both processes")
    started = [int(part.split(")")[0]) for part in log.read_text().split(" started (pid ")[1:]]
    assert all(alive(pid) for pid in [*started, worker])
    process.kill()
    process.wait(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in [*started, worker]), timeout=30,
             what="the killed supervisor's processes to stop")  # fmt: skip
