"""What can be checked of the full-stack files without a Docker engine."""

import asyncio
import base64
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
import yaml

from tests.unit.yaml_tree import strings
from warriors.adapters.search_engine import EngineKind, SearchEngine
from warriors.config import Settings

ROOT = Path(__file__).resolve().parents[2]

# `${NAME:?message}`: compose refuses to start while NAME is unset or empty.
REQUIRED = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):\?(?P<message>[^}]*)\}")
# `${NAME:-default}`: an optional setting.
OPTIONAL = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}")
# Variables that hold a secret by their name alone (`..._AUTH` is a credential, as
# REDISCLI_AUTH; Grafana's `GF_AUTH_*` are the settings of its [auth.*] sections).
# `_AUTH$`: redis-cli's REDISCLI_AUTH; READ_AUTH is a mode (open or required), not a secret.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|(?<!^READ)_AUTH$")
DATA_STORES = ("postgres", "elasticsearch", "redis", "kafka")
LOOPBACK = "127.0.0.1"


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whichever of the two forms (mapping or `KEY=value` list)."""
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(str(item).partition("=")[::2] for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


def _required_variables(compose: dict[str, Any]) -> set[str]:
    """The variables compose refuses to start without."""
    return {match["name"] for text in strings(compose) for match in REQUIRED.finditer(text)}


def _command_lines(service: dict[str, Any]) -> list[str]:
    """The service's command and health check, each as one string."""
    lines = []
    for node in (service.get("command"), service.get("healthcheck", {}).get("test")):
        if isinstance(node, list):
            lines.append(" ".join(str(part) for part in node))
        elif node is not None:
            lines.append(str(node))
    return lines


def _with_values(text: str, values: dict[str, str]) -> str:
    """`text` as compose would interpolate it, with these values for the variables."""
    return REQUIRED.sub(lambda match: values[match["name"]], text)


def test_compose_services_are_wired_together() -> None:
    services = _compose()["services"]
    assert {"postgres", "api", "projector", "dagster-webserver", "dagster-daemon"} <= set(services)
    one_shots = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shots == {"migrate"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        assert name in one_shots or service.get("restart") == "unless-stopped", f"{name}: no restart policy"
        assert name in one_shots or not service["healthcheck"].get("disable"), f"{name}: health check off"
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    env = services["api"]["environment"]
    settings_fields = {name.upper() for name in Settings.model_fields}
    # Besides the settings: prometheus_client's multiprocess folder (api/common/operations.py
    # adds the workers' metrics up when it is set), on a tmpfs, empty at each start, and
    # uvicorn's FORWARDED_ALLOW_IPS (the client's address from the proxy's X-Forwarded-For).
    assert set(env) - {"PROMETHEUS_MULTIPROC_DIR", "FORWARDED_ALLOW_IPS"} <= settings_fields, (
        "compose sets a variable the services do not read"
    )
    assert env["PROMETHEUS_MULTIPROC_DIR"] in services["api"]["tmpfs"], (
        "the API's metrics folder is not a tmpfs"
    )
    user, password, database = (services["postgres"]["environment"][k] for k in
                                ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))  # fmt: skip
    # Only `migrate` holds the owner's password: it migrates, gives the services' roles
    # their logins and creates Dagster's storage; everything else waits for its success.
    migrate = services["migrate"]
    assert set(migrate["environment"]) <= settings_fields
    assert (
        migrate["environment"]["DATABASE_URL"] == f"postgresql://{user}:{password}@postgres:5432/{database}"
    )
    assert " && ".join(["warriors migrate", "warriors db-roles", "warriors dagster-storage"]) in " ".join(
        migrate["command"]
    )
    role_passwords = {"warriors_api": migrate["environment"]["API_DB_PASSWORD"],
                      "warriors_projector": migrate["environment"]["PROJECTOR_DB_PASSWORD"]}  # fmt: skip
    roles = {"api": "warriors_api", "relay": "warriors_projector", "projector": "warriors_projector",
             "dagster-webserver": "warriors_projector", "dagster-daemon": "warriors_projector"}  # fmt: skip
    for name, role in roles.items():
        url = services[name]["environment"]["DATABASE_URL"]
        assert url == f"postgresql://{role}:{role_passwords[role]}@postgres:5432/{database}", name
        assert "warriors migrate" not in " ".join(services[name].get("command", [])), name
    for name in ("api", "relay", "projector", "dagster-webserver"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["api"]["build"] == services["projector"]["build"] == "."
    elastic_password = services["elasticsearch"]["environment"]["ELASTIC_PASSWORD"]
    assert env["SEARCH_URL"] == f"http://elastic:{elastic_password}@elasticsearch:9200"
    assert env["SEARCH_ENGINE"] in {kind.value for kind in EngineKind}
    redis_password = services["redis"]["environment"]["REDISCLI_AUTH"]
    assert env["REDIS_URL"] == f"redis://:{redis_password}@redis:6379/0"
    projector_env = services["projector"]["environment"]
    own = ("DATABASE_URL", "METRICS_PORT", "METRICS_HOST")  # the projector's own metrics endpoint
    assert {k: v for k, v in projector_env.items() if k not in own} == {
        k: v
        for k, v in env.items()
        if k
        not in (
            "DATABASE_URL",
            "HTTP_WORKERS",
            "PROMETHEUS_MULTIPROC_DIR",
            "FORWARDED_ALLOW_IPS",
            "READ_AUTH",
        )
    }
    assert projector_env["METRICS_PORT"] == "9101"
    assert "ports" not in services["projector"], "its metrics stay on the private network"
    assert {"elasticsearch", "redis", "kafka"} <= set(services["api"]["depends_on"])
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    # The relay: the projector's settings but the secrets it does not need (it publishes
    # events as stored, sealed): the master key, the search engine's and Redis' URLs.
    assert services["relay"]["environment"] == {
        k: v
        for k, v in projector_env.items()
        if k not in ("PERSONAL_DATA_KEY", "SEARCH_URL", "SEARCH_ENGINE", "REDIS_URL")
    }
    assert "warriors relay" in " ".join(services["relay"]["command"])
    dagster_env = services["dagster-daemon"]["environment"]
    assert dagster_env == services["dagster-webserver"]["environment"]
    # DOCKER_HOST: docker-py's (the run launcher's) way to the Docker API proxy.
    assert set(dagster_env) - {"DAGSTER_HOME", "DOCKER_HOST"} <= settings_fields
    # Dagster's storage as the role that owns it and nothing else, never the owner (issue 26).
    assert dagster_env["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://warriors_dagster:")
    assert password not in str(dagster_env), "a Dagster process holds the owner's password"
    assert password not in str(services["dagster-webserver"]), "a Dagster process holds the owner's password"
    for variable in ("DATABASE_URL", "SEARCH_URL", "SEARCH_ENGINE", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        assert dagster_env[variable] == projector_env[variable], variable


def test_no_data_store_is_published_no_default_password_dagster_and_the_api_on_loopback() -> None:
    compose = _compose()
    services: dict[str, dict[str, Any]] = compose["services"]

    # Published: the API's entry point (the proxy in front of the `api` replicas), the
    # Dagster UI and Grafana only, on the host's loopback only (the entry point's address
    # may be overridden, with 127.0.0.1 as its default; the UIs' may not). Prometheus is
    # not: its UI has no login (Grafana's, which queries it, has). Nor are the API
    # replicas (scaled: `--scale api=N`) or the Docker API proxy.
    for name in (*DATA_STORES, "prometheus", "api", "docker-socket-proxy"):
        assert "ports" not in services[name], f"{name} is published on the host"
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
    assert {name for name, service in services.items() if service.get("ports")} == {
        "proxy",
        "dagster-webserver",
        "grafana",
    }
    api_bind = re.compile(r"(127\.0\.0\.1|\$\{[A-Z_]+:-127\.0\.0\.1\}):8000:8000")
    for port in services["proxy"]["ports"]:
        assert isinstance(port, str), f"proxy: write the port as a quoted string: {port!r}"
        assert api_bind.fullmatch(port), f"the API's entry point is published beyond loopback: {port}"
    for name, published in (
        ("dagster-webserver", f"{LOOPBACK}:3000:3000"),
        ("grafana", f"{LOOPBACK}:3001:3000"),
    ):
        for port in services[name]["ports"]:
            assert isinstance(port, str), f"{name}: write the port as a quoted string: {port!r}"
            assert port == published, f"{name} is published beyond loopback (or elsewhere): {port}"

    # No literal secret: every secret variable, and the password of every URL, is a
    # `${NAME:?...}` that compose refuses to start without.
    required = _required_variables(compose)
    for text in strings(compose):
        for match in REQUIRED.finditer(text):
            # Some compose-go releases try the `-` (default) forms first when a hyphen
            # comes before the `?`, and read `${NAME:?see a-b}` as a default.
            assert "-" not in match["message"], f"hyphen in the message of {match[0]}"
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "ELASTIC_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    markers = {name: f"interpolated{index}" for index, name in enumerate(sorted(required))}
    urls = 0
    for name, service in services.items():
        for variable, value in _environment(service).items():
            if SECRET_NAME.search(variable):
                assert REQUIRED.fullmatch(value), f"{name}: {variable} is not a required ${{...:?}}"
            if "://" in value:
                urls += 1
                password = urlsplit(_with_values(value, markers)).password
                assert password is None or password in markers.values(), (
                    f"{name}: {variable} has a literal password"
                )
    assert urls >= 6, "the URLs were not found"
    for name in ("api", "dagster-webserver"):
        for variable in ("DATABASE_URL", "SEARCH_URL", "REDIS_URL"):
            url = _environment(services[name])[variable]
            assert urlsplit(_with_values(url, markers)).password in markers.values(), (
                f"{name}: {variable} has no password"
            )

    # Redis requires a password, the one the clients and the health check give.
    command = services["redis"]["command"]
    assert "--requirepass" in command
    redis_password = command[command.index("--requirepass") + 1]
    assert REQUIRED.fullmatch(redis_password)
    assert _environment(services["redis"])["REDISCLI_AUTH"] == redis_password
    assert "redis-cli" in " ".join(services["redis"]["healthcheck"]["test"])

    # No command prints a secret or takes one from compose on its command line (then in
    # `ps` and `docker inspect`), except redis-server's --requirepass (it replaces its
    # process title at start). `$$NAME` is left to the container's shell.
    for name, service in services.items():
        for line in _command_lines(service):
            assert not re.search(r"\becho\b|\bset -x\b|\bprintenv\b", line), f"{name}: {line}"
            compose_values = line.replace("$$", "")
            if name == "redis":
                compose_values = compose_values.replace(f"--requirepass {redis_password}", "")
            assert "$" not in compose_values, f"{name}: a value on the command line: {line}"
            assert not re.search(r"\s-a\s|--pass|-u\s*\S+:|://[^/\s]*:[^/\s]*@", line), f"{name}: {line}"

    # Elasticsearch with security on; its health check authenticates.
    elastic = _environment(services["elasticsearch"])
    assert elastic["xpack.security.enabled"] == "true"
    assert REQUIRED.fullmatch(elastic["ELASTIC_PASSWORD"])
    assert "$$ELASTIC_PASSWORD" in " ".join(services["elasticsearch"]["healthcheck"]["test"])

    # The secrets live in `.env`, which git ignores; `.env.example` names each required
    # variable, empty (a copy not filled in is refused), and each optional one.
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert ignored & {".env", "/.env"}, ".env is not in .gitignore"
    example = (ROOT / ".env.example").read_text()
    assigned = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", example, flags=re.MULTILINE))
    for variable in sorted(required):
        assert variable in assigned, f".env.example does not name {variable}"
        assert assigned[variable] == "", f".env.example gives {variable} a value"
    for text in strings(compose):
        for match in OPTIONAL.finditer(text):
            assert match["name"] in example, f".env.example does not mention {match['name']}"


def test_compose_urls_give_the_clients_their_passwords() -> None:
    """With the variables set as in `.env`, each client authenticates (the search adapter
    turns the URL's userinfo into an Authorization header)."""
    compose = _compose()
    services = compose["services"]
    # What the documented generators print (docs/security.md): URL-safe, unescaped.
    values = {name: secrets.token_urlsafe(32) for name in _required_variables(compose)}
    env = {key: _with_values(value, values) for key, value in _environment(services["api"]).items()}
    conninfo = psycopg.conninfo.conninfo_to_dict(env["DATABASE_URL"])
    assert (conninfo["user"], conninfo["password"]) == ("warriors_api", values["API_DB_PASSWORD"])
    client = redis.Redis.from_url(env["REDIS_URL"])
    assert client.connection_pool.connection_kwargs["password"] == values["REDIS_PASSWORD"]
    client.close()

    async def authorization() -> set[str]:
        engine = SearchEngine(env["SEARCH_URL"], EngineKind(env["SEARCH_ENGINE"]))
        try:
            clients = (engine.client, engine._query_client)
            return {
                node.config.headers["authorization"] for c in clients for node in c.transport.node_pool.all()
            }
        finally:
            await engine.close()

    expected = base64.b64encode(f"elastic:{values['ELASTIC_PASSWORD']}".encode()).decode()
    assert asyncio.run(authorization()) == {f"Basic {expected}"}


def test_dockerfile_builds_in_no_secret() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        instruction, *arguments = line.split() or [""]
        if instruction in ("COPY", "ADD"):
            sources = [argument for argument in arguments[:-1] if not argument.startswith("--")]
            assert sources, line
            for source in sources:
                assert source.rstrip("/") not in {".", "*"}, f"the build context (with .env) goes in: {line}"
                assert not source.startswith(".env"), line
    assert not re.search(r"^(ENV|ARG)\b.*(PASSWORD|SECRET|TOKEN)", dockerfile, flags=re.MULTILINE)


def test_dockerfile_places_dagster_files_where_compose_expects_them() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    compose = _compose()
    home = compose["services"]["dagster-daemon"]["environment"]["DAGSTER_HOME"]
    assert f"COPY dagster.yaml .{home.removeprefix('/app')}/dagster.yaml" in dockerfile
    assert "COPY workspace.yaml ./" in dockerfile
    for service in ("dagster-webserver", "dagster-daemon"):
        command = " ".join(compose["services"][service]["command"])
        assert "-w workspace.yaml" in command
        # The Dockerfile's `dagster` target (the platform plus Dagster's run launchers),
        # with compose's instance (deploy/dagster/dagster.yaml) over the image's.
        assert compose["services"][service]["build"] == {"context": ".", "target": "dagster"}, service
        instance = f"./deploy/dagster/dagster.yaml:{home}/dagster.yaml:ro"
        assert instance in compose["services"][service]["volumes"], service
    assert "warriors dagster-storage" in " ".join(compose["services"]["migrate"]["command"])
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", dockerfile, flags=re.MULTILINE)
    assert ("platform", "dagster") in stages
    assert stages[-1] == ("platform", ""), "the default target (the last stage) is not the platform image"
    # The run launchers belong to the Dagster family: the same release as the dagster pinned
    # in pyproject.toml (dagster 1.X.Y goes with the integrations' 0.(X+16).Y).
    dagster = re.search(r'"dagster==1\.(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert dagster, "pyproject.toml pins no dagster"
    family = f"0.{int(dagster[1]) + 16}.{dagster[2]}"
    assert "'.[deploy]'" in dockerfile, "the Dagster image installs the run launchers (the deploy extra)"
    pyproject = (ROOT / "pyproject.toml").read_text()
    constraints = (ROOT / "constraints.txt").read_text()
    for integration in ("dagster-docker", "dagster-k8s"):
        pins = re.findall(rf'"{integration}==([^"]+)"', pyproject)
        assert pins == [family], f"{integration}: {pins}, not the Dagster family's {family}"
        assert f"{integration}=={family}\n" in constraints, integration


def test_dockerfile_starts_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in re.findall(r"^COPY (\w+) ", dockerfile, flags=re.MULTILINE):
        assert (ROOT / folder).is_dir(), folder
    assert "api.gateway:create_app" in dockerfile
    from api.gateway import create_app

    assert callable(create_app)
    assert "warriors migrate" not in dockerfile, "the API's role cannot migrate (compose's `migrate` does)"
    assert 'warriors = "warriors.cli:app"' in (ROOT / "pyproject.toml").read_text()
