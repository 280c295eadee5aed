"""`make services`: the project's real servers for local use, started idempotently, with
their URLs written to `.env.services` (which the settings read), and stopped again.

- Kafka 4 (KRaft, one node) from Maven Central: KAFKA_BOOTSTRAP_SERVERS
- OpenSearch 2.19 (one node, one JVM) from Maven Central: SEARCH_URL (SEARCH_ENGINE=opensearch)
- Redis (Debian's redis-server): REDIS_URL

Each keeps its data under DATA_DIR/services/. `make run` and the CLI then use them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warriors.config import PROJECT_ROOT, get_settings
from warriors.secret_files import write_secret
from warriors.servers.kafka_broker import KafkaBroker
from warriors.servers.opensearch_server import OpenSearchServer
from warriors.servers.redis_server import RedisServer

ENV_FILE = PROJECT_ROOT / ".env.services"


@dataclass(frozen=True)
class Service:
    name: str
    variable: str
    start: Callable[[], str]
    stop: Callable[[], None]
    running: Callable[[], bool]


def services() -> list[Service]:
    settings = get_settings()
    root = settings.data_dir / "services"
    kafka = KafkaBroker(root / "kafka-broker", settings.services_kafka_port)
    search = OpenSearchServer(root / "opensearch", settings.services_search_port)
    redis = RedisServer(root / "redis", settings.services_redis_port)
    return [
        Service("Kafka", "KAFKA_BOOTSTRAP_SERVERS", kafka.start, kafka.stop, kafka.running),
        Service("OpenSearch", "SEARCH_URL", search.start, search.stop, search.running),
        Service("Redis", "REDIS_URL", redis.start, redis.stop, redis.running),
    ]


def start_all(say: Callable[[str], None]) -> dict[str, str]:
    """Start every service that is not running; write their URLs to .env.services."""
    urls = {}
    for service in services():
        say(f"{service.name}: {'already running' if service.running() else 'starting'} ...")
        urls[service.variable] = service.start()
        say(f"{service.name}: {service.variable}={urls[service.variable]}")
    write_env_file(ENV_FILE, {**urls, "SEARCH_ENGINE": "opensearch"})
    say(f"wrote {ENV_FILE} (make run and the CLI read it)")
    return urls


def stop_all(say: Callable[[str], None]) -> None:
    for service in reversed(services()):
        service.stop()
        say(f"{service.name}: stopped")
    ENV_FILE.unlink(missing_ok=True)
    say(f"removed {ENV_FILE}")


def write_env_file(path: Path, urls: dict[str, str]) -> None:
    lines = ["# Written by `make services` (warriors services start); removed by `make services-stop`."]
    lines += [f"{variable}={url}" for variable, url in urls.items()]
    write_secret(path, "\n".join(lines) + "\n")  # the Redis URL carries its password
