"""docker-compose.yml as Compose itself reads it, and what Compose cannot see.

`docker-compose config` (the `docker compose` CLI as a standalone binary, built from the
Go module proxy by `make deploy-tools` into .venv/bin) parses, interpolates and validates
the file without a Docker engine: with every required variable set it must accept it,
with one missing it must refuse it and say which, and its resolved form (anchors, merges
and `${...}` applied) must allow `--scale api=3 --scale projector=3` and publish on
loopback only. Then the project's own checks of the pieces Compose only passes through:
the proxy's configuration (deploy/haproxy), Dagster's instance with its run launcher
(deploy/dagster) and the Docker API proxy, Kafka's log directory."""

import json
import logging.config
import os
import re
import secrets
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from api.common.operations import operations_router
from tests.unit.yaml_tree import strings
from warriors.logs import correlated

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CLI = ROOT / ".venv/bin/docker-compose"
HAPROXY_CONFIG = ROOT / "deploy/haproxy/haproxy.cfg"
DAGSTER_INSTANCE = ROOT / "deploy/dagster/dagster.yaml"
REQUIRED = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):\?(?P<message>[^}]*)\}")
LOOPBACK = "127.0.0.1"
# The replicas `--scale` runs; the services that may be scaled.
REPLICAS = 3
SCALABLE = ("api", "projector")
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")


def _required_variables() -> dict[str, str]:
    """Each variable compose refuses to start without, with its message."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return {match["name"]: match["message"] for text in strings(compose) for match in REQUIRED.finditer(text)}


def _write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


@pytest.fixture
def values() -> dict[str, str]:
    """A complete `.env`: every required variable, each a generated value (what the
    documented generators print)."""
    return {name: secrets.token_urlsafe(24) for name in sorted(_required_variables())}


def _compose(
    tmp_path: Path, env_file: Path, *arguments: str, override: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_CLI.is_file(), f"{COMPOSE_CLI} is missing: run `make deploy-tools`"
    files = ["-f", str(COMPOSE_FILE)]
    if override is not None:
        files += ["-f", str(_write(tmp_path / "override.yml", override))]
    # A clean environment: the variables come from the env file only (a variable exported
    # in the shell would win over it), and no Docker or Compose setting of this machine.
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [str(COMPOSE_CLI), *files, "--env-file", str(env_file), *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _resolved(tmp_path: Path, values: dict[str, str], override: str | None = None) -> dict[str, Any]:
    """The file as Compose resolves it (`config --format json`)."""
    result = _compose(
        tmp_path, _write_env(tmp_path / "env", values), "config", "--format", "json", override=override
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)  # JSON is YAML
    return config


# Compose itself ------------------------------------------------------------------------


def test_the_compose_cli_is_the_one_the_makefile_builds(tmp_path: Path) -> None:
    wanted = re.search(r"^COMPOSE_VERSION := v(\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert wanted, "the Makefile names no COMPOSE_VERSION"
    result = _compose(tmp_path, _write_env(tmp_path / "env", {}), "version", "--short")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == wanted[1], (
        f"{COMPOSE_CLI} is {result.stdout.strip()}, the Makefile builds {wanted[1]}: remove it and run "
        "`make deploy-tools`"
    )


def test_compose_accepts_the_file_with_every_variable_set(tmp_path: Path, values: dict[str, str]) -> None:
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "ELASTIC_PASSWORD"} <= set(values)
    result = _compose(tmp_path, _write_env(tmp_path / "env", values), "config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"Compose warns: {result.stderr}"


@pytest.mark.parametrize("variable", sorted(_required_variables()))
def test_compose_refuses_the_file_without_a_required_variable(
    tmp_path: Path, values: dict[str, str], variable: str
) -> None:
    message = _required_variables()[variable]
    for env in ({k: v for k, v in values.items() if k != variable}, {**values, variable: ""}):
        result = _compose(tmp_path, _write_env(tmp_path / "env", env), "config", "--quiet")
        assert result.returncode != 0, f"accepted without {variable}"
        assert f"required variable {variable} is missing a value: {message}" in result.stderr, result.stderr


def test_compose_interpolates_the_secrets_into_the_urls(tmp_path: Path, values: dict[str, str]) -> None:
    services = _resolved(tmp_path, values)["services"]
    api = services["api"]["environment"]
    assert (
        api["DATABASE_URL"] == f"postgresql://warriors_api:{values['API_DB_PASSWORD']}@postgres:5432/warriors"
    )
    assert api["REDIS_URL"] == f"redis://:{values['REDIS_PASSWORD']}@redis:6379/0"
    # Nothing was left for the shell: no `${` survives interpolation.
    assert not [text for text in strings(services) if "${" in text]


def test_every_long_running_service_has_limits_and_the_relay_only_the_secrets_it_needs(
    tmp_path: Path, values: dict[str, str]
) -> None:
    """Issue 26: no service without a memory limit (one leaking or flooded service took the
    host's memory with it), a CPU limit for all but the data stores, none above one core
    (Docker refuses more than the host has); the relay, which publishes sealed events as
    stored, holds neither the personal data master key nor the search engine's or Redis'
    passwords, which the projector keeps."""
    services = _resolved(tmp_path, values)["services"]
    long_running = sorted(
        name for name, service in services.items() if service.get("restart") == "unless-stopped"
    )
    assert len(long_running) == 13, long_running
    assert [name for name in long_running if not services[name].get("mem_limit")] == []
    stores = {"postgres", "kafka", "elasticsearch"}
    assert [name for name in long_running if name not in stores and not services[name].get("cpus")] == []
    assert max(float(services[name].get("cpus", 0)) for name in long_running) <= 1.0
    relay = services["relay"]["environment"]
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "METRICS_PORT"} <= set(relay)
    assert not {"PERSONAL_DATA_KEY", "REDIS_URL", "SEARCH_URL"} & set(relay)
    projector = services["projector"]["environment"]
    assert {"PERSONAL_DATA_KEY", "REDIS_URL", "SEARCH_URL", "KAFKA_BOOTSTRAP_SERVERS", "METRICS_PORT"} <= set(
        projector
    )
    assert projector["DATABASE_URL"] == relay["DATABASE_URL"]
    assert projector["DATABASE_URL"].startswith("postgresql://warriors_projector:")


def test_the_api_and_the_projectors_scale_behind_a_proxy_on_loopback(
    tmp_path: Path, values: dict[str, str]
) -> None:
    """`docker compose up --scale api=3 --scale projector=3`, as Compose sees it: the same as
    `scale: 3` in an override, which Compose validates (a fixed container_name, for one,
    makes it refuse)."""
    override = yaml.safe_dump({"services": {name: {"scale": REPLICAS} for name in SCALABLE}})
    config = _resolved(tmp_path, values, override)
    services = config["services"]
    for name in SCALABLE:
        service = services[name]
        assert service["scale"] == REPLICAS, name
        # A published host port binds once: a second replica could not start.
        assert not service.get("ports"), f"{name} publishes a port: it cannot be scaled"
        assert "container_name" not in service, name
    # Every published port, on loopback; the API's entry point is the proxy, on 8000.
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"proxy", "dagster-webserver", "grafana"}
    for name, ports in published.items():
        for port in ports:
            assert port["host_ip"] == LOOPBACK, f"{name}: {port}"
    (proxy_port,) = published["proxy"]
    assert (proxy_port["published"], proxy_port["target"]) == ("8000", 8000)
    # API_BIND moves the entry point, and only it.
    moved = _resolved(tmp_path, {**values, "API_BIND": "10.0.0.7"})["services"]
    assert [port["host_ip"] for port in moved["proxy"]["ports"]] == ["10.0.0.7"]
    assert [port["host_ip"] for port in moved["dagster-webserver"]["ports"]] == [LOOPBACK]


# The proxy -------------------------------------------------------------------------------


def _haproxy_sections() -> dict[str, list[str]]:
    """deploy/haproxy/haproxy.cfg: each section (`frontend api`, ...) with its lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in HAPROXY_CONFIG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(line.strip(), [])
        else:
            current.append(" ".join(line.split()))
    return sections


def test_the_proxy_balances_over_every_api_replica_and_keeps_the_host(
    tmp_path: Path, values: dict[str, str]
) -> None:
    services = _resolved(tmp_path, values)["services"]
    proxy = services["proxy"]
    assert re.fullmatch(r"haproxy:\d+\.\d+\.\d+(-alpine)?", proxy["image"]), (
        f"not a pinned release: {proxy['image']}"
    )
    (mount,) = proxy["volumes"]
    assert (mount["type"], Path(mount["source"]), mount["target"], mount["read_only"]) == (
        "bind",
        HAPROXY_CONFIG,
        "/usr/local/etc/haproxy/haproxy.cfg",
        True,
    )
    sections = _haproxy_sections()
    frontend, backend, health = sections["frontend api"], sections["backend api"], sections["frontend health"]
    # Listens where the published port points; the API replicas, found by DNS at run time
    # (Docker's embedded resolver answers every replica's address), in enough slots.
    assert f"bind :{proxy['ports'][0]['target']}" in frontend
    assert "default_backend api" in frontend
    (template,) = [line for line in backend if line.startswith("server-template ")]
    slots = re.fullmatch(r"server-template \w+ 1-(\d+) api:8000", template)
    assert slots, template
    assert int(slots[1]) >= REPLICAS, template
    default_server = next(line for line in backend if line.startswith("default-server "))
    assert {"check", "resolvers docker", "init-addr none"} <= set(
        re.findall(r"check|resolvers \w+|init-addr \w+", default_server)
    ), default_server
    assert "parse-resolv-conf" in sections["resolvers docker"] or "nameserver" in " ".join(
        sections["resolvers docker"]
    )
    # A replica gets requests while its readiness answers 200, asked with a Host the API
    # accepts when ALLOWED_HOSTS is set (the service's name, as Prometheus sends).
    routes = {getattr(route, "path", None) for route in operations_router(_ready).routes}
    check = next(line for line in backend if line.startswith("http-check send "))
    uri = re.search(r"\buri (\S+)", check)
    assert uri, check
    assert uri[1] == "/health/ready", check
    assert uri[1] in routes, check
    assert "hdr Host api" in check
    assert "http-check expect status 200" in backend
    # The client's Host reaches the API as sent (ALLOWED_HOSTS judges it), and the client's
    # address replaces any X-Forwarded-For it sent, which the API then trusts.
    everything = " ".join(line for lines in sections.values() for line in lines).lower()
    assert not re.search(r"(set|replace|del|add)-header host\b", everything), "the proxy rewrites Host"
    assert "http-request set-header x-forwarded-for %[src]" in everything
    assert "option forwardfor" not in everything, (
        "appending to a client's X-Forwarded-For lets it pick its address"
    )
    # Trusted from the proxy alone (issue 26): its fixed address on the network it shares
    # with the API and nobody else; any other container is recorded by its own address.
    trusted = services["api"]["environment"]["FORWARDED_ALLOW_IPS"]
    assert set(proxy["networks"]) == {"edge"}
    assert proxy["networks"]["edge"]["ipv4_address"] == trusted
    assert {name for name, service in services.items() if "edge" in service.get("networks", [])} == {
        "api",
        "proxy",
    }
    # The compose health check asks the proxy's own frontend, which fails without a replica.
    bind = next(line for line in health if line.startswith("bind "))
    monitor = next(line for line in health if line.startswith("monitor-uri "))
    url = f"http://{bind.split()[1]}{monitor.split()[1]}"
    assert url in " ".join(proxy["healthcheck"]["test"])
    assert "monitor fail if { nbsrv(api) lt 1 }" in health
    assert proxy["depends_on"]["api"]["condition"] == "service_started"


async def _ready() -> dict[str, str]:
    return {}


# Dagster: each run in a container of its own ---------------------------------------------


def _instance() -> dict[str, Any]:
    instance: dict[str, Any] = yaml.safe_load(DAGSTER_INSTANCE.read_text())
    return instance


def test_dagster_instance_is_valid_and_the_root_one_but_for_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's own schema accepts the file (run monitoring included); storage and the
    run queue are those of `make run`'s instance (the root dagster.yaml)."""
    (tmp_path / "dagster.yaml").write_text(DAGSTER_INSTANCE.read_text())
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql://user:password@postgres:5432/dagster")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["start_timeout_seconds"] > 0
    instance = _instance()
    root: dict[str, Any] = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    own = {"run_launcher", "run_monitoring", "python_logs"}
    assert {k: v for k, v in instance.items() if k not in own} == {
        k: v for k, v in root.items() if k not in own
    }
    assert (instance["run_launcher"]["module"], instance["run_launcher"]["class"]) == (
        "dagster_docker",
        "DockerRunLauncher",
    )


def test_dagster_runs_start_in_containers_on_the_compose_network(
    tmp_path: Path, values: dict[str, str]
) -> None:
    config = _resolved(tmp_path, values)
    services = config["services"]
    launcher = _instance()["run_launcher"]["config"]
    # The image the Dagster services are built as, on the network the data stores are on
    # (by its fixed name), not on the Docker API's.
    images = {services[name]["image"] for name in DAGSTER_SERVICES}
    assert images == {launcher["image"]}
    assert config["networks"]["default"]["name"] == launcher["network"]
    assert config["networks"]["docker-api"]["name"] != launcher["network"]
    # The variables the runs need, forwarded from the daemon's environment: all of its
    # own but the Docker API's address and the projector's metrics endpoint.
    daemon = services["dagster-daemon"]
    not_for_runs = {"DOCKER_HOST", "METRICS_PORT", "METRICS_HOST"}
    forwarded = launcher["env_vars"]
    assert all("=" not in name for name in forwarded), "a value written into dagster.yaml"
    assert set(forwarded) == set(daemon["environment"]) - not_for_runs
    assert {"DATABASE_URL", "DAGSTER_POSTGRES_URL", "SEARCH_URL", "REDIS_URL"} <= set(forwarded)
    # The runs share the daemon's and the webserver's named volumes (compute logs, the
    # Parquet dataset), by their fixed names, at the same paths.
    kwargs = launcher["container_kwargs"]
    volume_names = {key: volume["name"] for key, volume in config["volumes"].items()}
    for service in (services[name] for name in DAGSTER_SERVICES):
        named = {
            mount["target"]: volume_names[mount["source"]]
            for mount in service["volumes"]
            if mount["type"] == "volume"
        }
        assert dict(reversed(volume.split(":", 1)) for volume in kwargs["volumes"]) == named
    assert daemon["environment"]["ANALYTICS_DIR"] in [v.split(":")[1] for v in kwargs["volumes"]]
    assert kwargs["auto_remove"] is True
    assert kwargs["cap_drop"] == ["ALL"]
    assert "mem_limit" in kwargs
    # Those folders exist in the image, owned by its user: an empty volume takes its owner
    # from the folder it is mounted on.
    dockerfile = (ROOT / "Dockerfile").read_text()
    owned = re.search(r"install -d -o warriors -m \d+ ([^\n]+)", dockerfile.split("AS dagster", 1)[1])
    assert owned, "the dagster target makes no folder for the volumes"
    for volume in kwargs["volumes"]:
        assert volume.split(":")[1] in owned[1].split(), volume


def test_only_dagster_reaches_the_docker_api_and_only_for_containers(
    tmp_path: Path, values: dict[str, str]
) -> None:
    config = _resolved(tmp_path, values)
    services = config["services"]
    proxy = services["docker-socket-proxy"]
    assert re.fullmatch(r"tecnativa/docker-socket-proxy:\d+\.\d+\.\d+", proxy["image"]), proxy["image"]
    assert config["networks"]["docker-api"].get("internal") is True
    on_docker_api = {
        name for name, service in services.items() if "docker-api" in service.get("networks", {})
    }
    assert on_docker_api == {"docker-socket-proxy", *DAGSTER_SERVICES}
    assert set(proxy["networks"]) == {"docker-api"}
    assert not proxy.get("ports")
    # The socket is mounted here only.
    for name, service in services.items():
        sockets = [mount for mount in service.get("volumes", []) if mount["source"] == "/var/run/docker.sock"]
        assert bool(sockets) == (name == "docker-socket-proxy"), name
    # Containers (create, start, inspect, stop: what DockerRunLauncher and run monitoring
    # call), with POST for all but inspect; every other section stays at the image's
    # default (off, but for _ping, version and events).
    assert proxy["environment"] == {"CONTAINERS": "1", "POST": "1", "ALLOW_START": "1", "ALLOW_STOP": "1"}
    for name in DAGSTER_SERVICES:
        assert services[name]["environment"]["DOCKER_HOST"] == "tcp://docker-socket-proxy:2375", name
        assert services[name]["depends_on"]["docker-socket-proxy"]["condition"] == "service_healthy", name
    assert "http://127.0.0.1:2375/_ping" in " ".join(proxy["healthcheck"]["test"])


# Kafka ---------------------------------------------------------------------------------


def test_kafka_keeps_its_log_on_its_volume(tmp_path: Path, values: dict[str, str]) -> None:
    """The apache/kafka image writes to /tmp/kraft-combined-logs unless KAFKA_LOG_DIRS says
    otherwise: inside the container, lost with it."""
    kafka = _resolved(tmp_path, values)["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"].split(",")
    volumes = [PurePosixPath(mount["target"]) for mount in kafka["volumes"] if mount["type"] == "volume"]
    for log_dir in log_dirs:
        path = PurePosixPath(log_dir)
        assert any(path == volume or volume in path.parents for volume in volumes), (
            f"{log_dir} is not on a volume"
        )
    assert kafka["restart"] == "unless-stopped"


def test_dagster_runs_log_json_lines_with_run_and_correlation_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """The instance's handler (as Dagster builds it: dictConfig of dagster_handler_config)
    writes one JSON object per line, with the run id and an event's correlation id."""
    handler_config = _instance()["python_logs"]["dagster_handler_config"]
    name = "warriors.test_dagster_json"
    loggers = {name: {"handlers": list(handler_config["handlers"]), "level": "INFO"}}
    logging.config.dictConfig(
        {"version": 1, "disable_existing_loggers": False, **handler_config, "loggers": loggers}
    )
    logger = logging.getLogger(name)
    try:
        with correlated("corr-dagster-1"):
            logger.info("applied", extra={"dagster_meta": {"run_id": "run-123"}})
    finally:
        logger.handlers.clear()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["process"], line["run_id"], line["correlation_id"]) == (
        "dagster",
        "run-123",
        "corr-dagster-1",
    )
    assert line["message"] == "applied"


def test_production_profiles_ask_every_read_for_a_key(tmp_path: Path, values: dict[str, str]) -> None:
    """Names and dates of birth are personal data: compose's API (unless .env opens it) and
    the Kubernetes ConfigMap require a key on reads; `make run` keeps its open default."""
    api = _resolved(tmp_path, values)["services"]["api"]["environment"]
    assert api["READ_AUTH"] == "required"
    assert (
        _resolved(tmp_path, {**values, "READ_AUTH": "open"})["services"]["api"]["environment"]["READ_AUTH"]
        == "open"
    )
    config_maps = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/configmap.yaml").read_text()) if d]
    assert [d["data"]["READ_AUTH"] for d in config_maps] == ["required"]
