"""What can be checked of the full-stack files without a Docker engine."""

import re
from pathlib import Path

import yaml

from warriors.adapters.search_engine import EngineKind
from warriors.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_are_wired_together() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "api", "projector", "dagster-webserver", "dagster-daemon"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    env = services["api"]["environment"]
    settings_fields = {name.upper() for name in Settings.model_fields}
    assert set(env) <= settings_fields, "compose sets a variable the services do not read"
    user, password, database = (services["postgres"]["environment"][k] for k in
                                ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))  # fmt: skip
    assert env["DATABASE_URL"] == f"postgresql://{user}:{password}@postgres:5432/{database}"
    assert services["api"]["build"] == services["projector"]["build"] == "."
    assert env["SEARCH_URL"] == "http://elasticsearch:9200"
    assert env["SEARCH_ENGINE"] in {kind.value for kind in EngineKind}
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert services["projector"]["environment"] == env
    assert {"elasticsearch", "redis", "kafka"} <= set(services["api"]["depends_on"])
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["relay"]["environment"] == env
    assert "warriors relay" in " ".join(services["relay"]["command"])
    dagster_env = services["dagster-daemon"]["environment"]
    assert dagster_env == services["dagster-webserver"]["environment"]
    assert set(dagster_env) - {"DAGSTER_HOME"} <= settings_fields
    assert dagster_env["DAGSTER_POSTGRES_URL"].startswith(
        f"postgresql+psycopg2://{user}:{password}@postgres:5432/"
    )
    assert dagster_env["DATABASE_URL"] == env["DATABASE_URL"]


def test_dockerfile_places_dagster_files_where_compose_expects_them() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    home = compose["services"]["dagster-daemon"]["environment"]["DAGSTER_HOME"]
    assert f"COPY dagster.yaml .{home.removeprefix('/app')}/dagster.yaml" in dockerfile
    assert "COPY workspace.yaml ./" in dockerfile
    for service in ("dagster-webserver", "dagster-daemon"):
        command = " ".join(compose["services"][service]["command"])
        assert "-w workspace.yaml" in command
        assert "warriors dagster-storage" in command


def test_dockerfile_starts_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in re.findall(r"^COPY (\w+) ", dockerfile, flags=re.MULTILINE):
        assert (ROOT / folder).is_dir(), folder
    assert "api.gateway:create_app" in dockerfile
    from api.gateway import create_app

    assert callable(create_app)
    assert "warriors migrate" in dockerfile
    assert 'warriors = "warriors.cli:app"' in (ROOT / "pyproject.toml").read_text()
