"""Shared pieces of the benchmarks: the machine, load generators and servers under test."""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from warriors.security.identity import Role
from warriors.security.key_store import create_key
from warriors.security.personal_data import new_master_key_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The variable that hands a key to a child process (vegeta's wrapper in read_path): the
# environment, unlike a command line, is readable by the same user only.
KEY_VARIABLE = "BENCH_API_KEY"


@dataclass
class LoadResult:
    label: str
    concurrency: int | str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {system}"


def require(tool: str) -> str:
    path = shutil.which(tool) or (
        str(ROOT / ".venv" / "bin" / tool) if (ROOT / ".venv" / "bin" / tool).exists() else None
    )
    if path is None:
        sys.exit(f"{tool} is not installed; run `make bench`, which installs it")
    return path


def writer_key(database_url: str, name: str) -> str:
    """A new writer key in a migrated database: what the benchmarks' writes carry (the key
    is a secret: it goes into headers, 0600 files and child environments, never into
    printed output, command lines or results)."""
    return create_key(database_url, Role.WRITER, name)[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def lua_table(headers: dict[str, str]) -> str:
    """A Lua table literal of `headers` for a wrk script (JSON strings are Lua strings)."""
    return "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()) + "}"


def write_private(path: Path, text: str) -> Path:
    """Write `text` to a new file readable by its owner only (wrk scripts holding a key)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    return path


def wrk(url: str, concurrency: int, seconds: int, script: Path, label: str) -> LoadResult:
    """Closed-loop load: `concurrency` connections, each sending as fast as answered."""
    out = subprocess.run(
        [require("wrk"), f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return LoadResult(
        label, concurrency, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        _wrk_ms(out, "50%"), _wrk_ms(out, "99%"), errors,
    )  # fmt: skip


def _wrk_ms(out: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def vegeta(
    url: str,
    body: bytes,
    rate: int,
    seconds: int,
    label: str,
    workdir: Path,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Open-loop load: `rate` requests/s whatever the answers' latency (no coordinated omission).
    The target (with `headers`: an API key) goes to vegeta on stdin, not its command line."""
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    lines = "".join(f"{name}: {value}\n" for name, value in (headers or {}).items())
    target = f"POST {url}\nContent-Type: application/json\n{lines}@{body_file}\n"
    attack = subprocess.run(
        [require("vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s", "-max-workers=512"],
        input=target.encode(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    report = json.loads(subprocess.run([require("vegeta"), "report", "-type=json"], input=attack,
                                       capture_output=True, check=True).stdout)  # fmt: skip
    ok = report["status_codes"].get("202", 0)
    return LoadResult(
        label, f"{rate}/s", report["throughput"], report["latencies"]["50th"] / 1e6,
        report["latencies"]["99th"] / 1e6, report["requests"] - ok,
    )  # fmt: skip


# The services refuse to start without a personal data master key (docs/security.md). A
# benchmark's data goes with its run: unless the environment names a key, every process a
# benchmark starts (they inherit this environment) shares one made for the run.
if not os.environ.get("PERSONAL_DATA_KEY") and not os.environ.get("PERSONAL_DATA_KEY_FILE"):
    os.environ["PERSONAL_DATA_KEY"] = new_master_key_text()

# Reads are measured as anonymous readers send them: open whatever a developer's
# environment or .env.services says (writes need a key in any case).
READS_OPEN = {"READ_AUTH": "open"}


class Server:
    """An ASGI app under uvicorn with `workers` processes, as `make run` serves it."""

    def __init__(self, app: str, port: int, workers: int, env: dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env={**os.environ, **READS_OPEN, **env}, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{app} exited; see {log}")
            try:
                httpx.get(f"{self.url}/health/live", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        sys.exit(f"{app} did not start; see {log}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def load_options(parser: argparse.ArgumentParser) -> None:
    """The options every closed-loop benchmark takes."""
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warriors", type=int, default=100_000)


def median(results: list[LoadResult]) -> LoadResult:
    """The round with the median throughput (rounds are interleaved against the noise)."""
    return sorted(results, key=lambda r: r.requests_per_second)[len(results) // 2]


def print_table(title: str, results: list[LoadResult]) -> None:
    print(f"{title:<40} {'clients':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        print(f"{r.label:<40} {r.concurrency!s:>8} {r.requests_per_second:>9.0f} {r.p50_ms:>8.2f}"
              f" {r.p99_ms:>8.2f} {r.errors:>7}")  # fmt: skip
