"""End-to-end projection lag through Kafka, next to the store-tailing path, in one run:
the time from a creation's 202 until the warrior is in the read model, p50/p99, while
vegeta writes at a sustained rate.

* store-tailing: the live projector reads the store (LISTEN/NOTIFY wake-ups);
* through Kafka: the relay publishes the store's events (idempotent producer, acks=all,
  checkpoint after confirmation), the projector consumes `warrior-events` as a group.

    make bench-bus      # or: .venv/bin/python -m bench.bus_lag --help
"""

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from bench.read_path import probe_lag
from bench.tools import Server, machine, save, writer_key
from tests.support import LoggedProcess, ProjectorProcess
from warriors.eventstore.database import apply_migrations
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres
from warriors.servers.kafka_broker import KafkaBroker


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Below saturation on every machine measured so far: a lag measured over capacity is a
    # queue's length (1,000/s overloaded the 2026-12-03 VM, whose creations top out at ~730/s).
    parser.add_argument("--rate", type=int, default=500, help="creations/s written during each probe run")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine()}; every server and the load generator share these cores\n")
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        workdir = Path(tmp)
        postgres = EmbeddedPostgres(workdir / "pg", free_port())
        broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="bench-kafka-")), free_port())
        url = postgres.start()
        try:
            bootstrap = broker.start()
            apply_migrations(url)
            key = writer_key(url, "bench bus_lag")  # the probes and the load are creations
            socket_url = postgres.socket_url()
            kafka = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_PARTITIONS": "3"}
            for r in range(args.rounds):  # interleaved: the machine's noise hits both alike
                for path, env in (("store-tailing", {}), ("through Kafka", kafka)):
                    result: dict[str, Any] = asyncio.run(
                        _run(args, url, socket_url, env, workdir / f"{r}-{len(env)}", key)
                    )
                    result["path"] = path
                    report["runs"].append(result)
                    print(f"round {r + 1}, {path:<14}: {result['probes']} probes at {args.rate} writes/s,"
                          f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms", flush=True)  # fmt: skip
        finally:
            broker.stop()
            postgres.destroy()
    medians = {}
    for path in ("store-tailing", "through Kafka"):
        runs = sorted((r for r in report["runs"] if r["path"] == path), key=lambda r: r["p50_ms"])
        medians[path] = runs[len(runs) // 2]
    store, bus = medians["store-tailing"], medians["through Kafka"]
    print(f"\nmedian: store-tailing p50 {store['p50_ms']:.1f} / p99 {store['p99_ms']:.1f} ms;"
          f" through Kafka p50 {bus['p50_ms']:.1f} / p99 {bus['p99_ms']:.1f} ms;"
          f" ratio (Kafka / store) p50 {bus['p50_ms'] / store['p50_ms']:.1f}x, p99 {bus['p99_ms'] / store['p99_ms']:.1f}x")  # fmt: skip
    report["medians"] = medians
    print(f"results saved to {save('bus_lag', report)}")


async def _run(
    args: argparse.Namespace, url: str, socket_url: str, bus: dict[str, str], workdir: Path, key: str
) -> dict[str, float]:
    workdir.mkdir(parents=True)
    env = {"DATABASE_URL": socket_url, **bus}
    service = Server("api.gateway:create_app", free_port(), args.workers, env, workdir / "api.log")
    processes: list[LoggedProcess] = [ProjectorProcess(socket_url, env=bus, name="bench-projector")]
    if bus:
        processes.append(LoggedProcess(["-m", "warriors.cli", "relay"], env, "bench-relay"))
    try:
        return await probe_lag(service.url, url, args.rate, args.seconds, workdir, key, kafka=bool(bus))
    finally:
        for process in processes:
            process.stop()
        service.stop()


if __name__ == "__main__":
    main()
