"""The monitoring files: compose's Prometheus and Grafana, deploy/prometheus (scrape
config, alert rules) and deploy/grafana (data source, dashboard). Checked without a
Docker engine: the files are parsed, every metric they name is one the code defines,
the paths and volumes fit together, and promtool (Debian's `prometheus` package, which
`make test` installs) checks the config and the rules and runs the alerts' unit tests."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import api.common.middleware
import api.gateway
import warriors.eventstore.grouping
import warriors.metrics
from api.common.access import ROLE_FIELD
from api.common.operations import operations_router
from warriors.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
ALERT_RULES = ROOT / "deploy/prometheus/alerts.yml"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/warriors.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/warriors.json"
OPERATIONS_DOC = ROOT / "docs/operations.md"

# The modules that define the platform's metrics (warriors/metrics.py, the HTTP ones, the
# database grouping); the dashboard shows each of them.
METRIC_MODULES = (warriors.metrics, api.common.middleware, warriors.eventstore.grouping)
# Series Prometheus makes itself: each target's `up`, and `ALERTS` (pending and firing).
PROMETHEUS_SERIES = frozenset({"up", "ALERTS"})
# The series each exposed metric type gives (a counter `x` is exposed as `x_total`).
SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# The alerts, what each watches and how long its condition must last before it fires.
ALERTS = {
    "ProjectionLagging": ({"warriors_projection_lag_events", "warriors_projection_lag_seconds"}, "5m"),
    "ProjectionFailed": ({"warriors_projection_failed"}, "1m"),
    "ParkedEvents": ({"warriors_parked_events"}, "10m"),
    "RelayStalled": ({"warriors_relay_lag_events"}, "5m"),
    "ApiDown": ({"up"}, "2m"),
}
SEVERITIES = frozenset({"critical", "warning"})
REQUIRED = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):\?(?P<message>[^}]*)\}")
# The Prometheus image's data folder is nobody:nobody (65534) with g+w.
NOBODY_GROUP = 65534

# PromQL, enough to find the metric names: strings, label matchers, ranges and the
# grouping clauses are dropped, and an identifier followed by `(` is a function.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"})
# Annotation templates: only these forms, so the unit tests below can render them.
_TEMPLATE = re.compile(r"\{\{\s*\$(?:labels\.(?P<label>\w+)|(?P<value>value))\s*\}\}")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _RANGES.sub("", _MATCHERS.sub("", _STRINGS.sub('""', expr)))
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if not text[match.end() :].lstrip().startswith("(") and match[0] not in _KEYWORDS:
            names.add(match[0])
    return names


def _yaml(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _yaml(ROOT / "docker-compose.yml")["services"]
    return services


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def _exposed_series() -> set[str]:
    """Every series the API's /metrics can expose: the families of the registry the served
    app fills (api.gateway imports all it serves), each with its type's suffixes."""
    assert callable(api.gateway.create_app)  # imported for the metrics the served app registers
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in SERIES_SUFFIXES.get(family.type, ("",))
    }


def _platform_metrics() -> dict[str, set[str]]:
    """Each metric the platform's modules define, with the series it exposes."""
    metrics = {}
    for module in METRIC_MODULES:
        for value in vars(module).values():
            if not isinstance(value, MetricWrapperBase):
                continue
            for family in value.describe():
                metrics[family.name] = {family.name + suffix for suffix in SERIES_SUFFIXES[family.type]}
    return metrics


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those of collapsed rows included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_queries() -> list[str]:
    dashboard = _dashboard()
    queries = [
        target["expr"] for panel in _panels(dashboard["panels"]) for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        definition = re.fullmatch(r"label_values\((?P<metric>[^,]+),\s*\w+\)", variable["definition"])
        assert definition, f"variable {variable['name']}: not a label_values(metric, label) query"
        queries.append(definition["metric"])
    return queries


def _datasource_references(node: object) -> Iterator[object]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasource_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_references(value)


@dataclass(frozen=True)
class Mount:
    source: str  # a path on the host (a bind mount) or a named volume
    target: PurePosixPath
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/"))


def _mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"write volumes as SOURCE:TARGET[:ro]: {volume!r}"
        source, target, *mode = volume.split(":")
        mounts.append(Mount(source, PurePosixPath(target), mode == ["ro"]))
    return mounts


def _mount_of(service: dict[str, Any], path: str) -> tuple[Mount, PurePosixPath]:
    """The mount a path in the container is on, and the path below the mount's target."""
    container_path = PurePosixPath(path)
    for mount in _mounts(service):
        if container_path == mount.target or mount.target in container_path.parents:
            return mount, container_path.relative_to(mount.target)
    raise AssertionError(f"{path} is on no mount of the service")


def _host_path(service: dict[str, Any], path: str) -> Path:
    """The file of the repository a path in the container is (through a read-only bind)."""
    mount, below = _mount_of(service, path)
    assert mount.is_bind, f"{path} is on volume {mount.source}, not on a file of the repository"
    assert mount.read_only, f"{path} is mounted read-write"
    return (ROOT / mount.source / below).resolve()


def _flag(command: list[str], name: str) -> str:
    values = [part.partition("=")[2] for part in command if part.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times"
    return values[0]


def _duration_seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, f"not a simple duration: {duration}"
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_metric_names_finds_what_a_query_selects() -> None:
    """The PromQL reading the tests below rely on."""
    latency = 'rate(http_request_duration_seconds_bucket{route=~"/a(b)"}[5m])'
    assert metric_names(f"histogram_quantile(0.99, sum by (le, route) ({latency}))") == {
        "http_request_duration_seconds_bucket"
    }
    assert metric_names("a_total > 1000 or b:rate5m > 30 / on (x) group_left c") == {
        "a_total",
        "b:rate5m",
        "c",
    }
    assert metric_names("min_over_time(x[5m]) > 0 and deriv(x[$__rate_interval] offset 1m) >= 0") == {"x"}
    assert metric_names('sum(rate(y_total{p=~"$projection"}[1m])) by (p) / 2e3') == {"y_total"}
    assert metric_names('up{job="warriors-api"} == bool 0') == {"up"}


def test_alert_rules_watch_metrics_the_code_defines_and_say_what_to_do() -> None:
    exposed = _exposed_series()
    rules = _rules()
    assert [rule.get("alert") for rule in rules] == list(ALERTS), "alerts missing, renamed or added"
    anchors = _anchors(OPERATIONS_DOC.read_text())
    for rule in rules:
        name = rule["alert"]
        used = metric_names(rule["expr"])
        assert used <= exposed | PROMETHEUS_SERIES, f"{name}: no such metric: {used - exposed}"
        watched, duration = ALERTS[name]
        assert used == watched, f"{name} watches {used}, not {watched}"
        assert rule.get("for") == duration, f"{name}: `for` is {rule.get('for')}, not {duration}"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: no severity label"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            assert annotations.get(key, "").strip(), f"{name}: no {key}"
        description = annotations["description"]
        assert "warriors projections" in description or "docker compose" in description, (
            f"{name}: the description does not say what to run"
        )
        for anchor in re.findall(r"docs/operations\.md#([\w-]+)", description):
            assert anchor in anchors, f"{name}: docs/operations.md has no #{anchor}"
        for text in annotations.values():
            assert text.count("{{") == len(_TEMPLATE.findall(text)), (
                f"{name}: a template beyond $labels/$value"
            )
    # The lag thresholds are Dagster's (LAG_THRESHOLD_EVENTS / _SECONDS) defaults.
    lagging = next(rule["expr"] for rule in rules if rule["alert"] == "ProjectionLagging")
    events = Settings.model_fields["lag_threshold_events"].default
    seconds = Settings.model_fields["lag_threshold_seconds"].default
    assert f"warriors_projection_lag_events > {events:g}" in lagging
    assert f"warriors_projection_lag_seconds > {seconds:g}" in lagging
    # ApiDown watches the job that scrapes the API.
    api_down = next(rule["expr"] for rule in rules if rule["alert"] == "ApiDown")
    jobs = [job["job_name"] for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]]
    assert f'up{{job="{jobs[0]}"}}' in api_down


def test_dashboard_shows_every_platform_metric_from_the_provisioned_datasource() -> None:
    exposed = _exposed_series()
    queries = _dashboard_queries()
    used = set().union(*(metric_names(query) for query in queries))
    assert used, "no query found"
    assert used <= exposed | PROMETHEUS_SERIES, f"no such metric: {used - exposed - PROMETHEUS_SERIES}"
    for metric, series in _platform_metrics().items():
        assert series & used, f"the dashboard does not show {metric}"
    assert len(_platform_metrics()) >= 10, "the platform's metrics were not found"

    dashboard = _dashboard()
    datasources = _yaml(DATASOURCES)["datasources"]
    assert len(datasources) == 1
    (datasource,) = datasources
    assert datasource["type"] == "prometheus"
    # Provisioned from a file: a fixed uid, no id, no import-time inputs; every query
    # names the provisioned data source by its uid.
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert "id" not in dashboard or dashboard["id"] is None
    assert "__inputs" not in dashboard
    references = list(_datasource_references(dashboard))
    assert len(references) > len(queries)
    for reference in references:
        assert isinstance(reference, dict), f"a data source named, not referenced by uid: {reference!r}"
        if reference["type"] != "grafana":  # the built-in annotations
            assert reference == {"type": "prometheus", "uid": datasource["uid"]}
    panels = [panel for panel in _panels(dashboard["panels"]) if panel["type"] != "row"]
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, f"{panel['title']}: wider than the grid"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_prometheus_scrapes_the_api_with_the_key_migrate_keeps() -> None:
    services = _services()
    prometheus, migrate = services["prometheus"], services["migrate"]
    config = _yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"warriors-api", "warriors-projector", "warriors-relay"}
    job = jobs["warriors-api"]
    (static,) = job["static_configs"]
    assert static["targets"] == ["api:8000"]
    # Each replica's uvicorn listens on 8000 on the compose network (the Dockerfile's CMD;
    # `api` publishes no port, the proxy in front of it does).
    assert "--port 8000" in (ROOT / "Dockerfile").read_text()
    assert job.get("metrics_path", "/metrics") == "/metrics"

    async def ready() -> dict[str, str]:
        return {}

    routes = {getattr(route, "path", None): route for route in operations_router(ready).routes}
    # The monitor role (issue 26): metrics and status, never a write or an erasure.
    assert getattr(routes[job.get("metrics_path", "/metrics")], "openapi_extra", {})[ROLE_FIELD] == "monitor"
    authorization = job["authorization"]
    assert authorization["type"] == "Bearer"
    assert "credentials" not in authorization, "a literal key in the config"

    # The key file: on a named volume, read-only here, written by `migrate`.
    key_mount, key_below = _mount_of(prometheus, authorization["credentials_file"])
    assert not key_mount.is_bind
    assert key_mount.read_only
    assert key_mount.source in _yaml(ROOT / "docker-compose.yml")["volumes"]
    command = " ".join(migrate["command"])
    ensure = re.search(r"warriors keys ensure-file (\S+) --role monitor --name prometheus\b", command)
    assert ensure, "migrate does not keep Prometheus' key"
    assert command.index("warriors migrate") < ensure.start(), "the key is made before the migrations"
    written_mount, written_below = _mount_of(migrate, ensure[1])
    assert (written_mount.source, written_below) == (key_mount.source, key_below)
    assert not written_mount.read_only
    assert prometheus["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "api" not in prometheus["depends_on"], "Prometheus must run while the API is down (ApiDown)"

    # The key is 0600 and owned by the image's user: Prometheus runs as that uid, with
    # the group of its image's data folder; the folder the volume is mounted on belongs
    # to that user in the image (an empty volume takes its owner from there).
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd --system --uid (\d+) [^\n]*\bwarriors\b", dockerfile)
    assert uid, "the Dockerfile's useradd sets no fixed uid"
    assert prometheus["user"] == f"{uid[1]}:{NOBODY_GROUP}"
    assert f"install -d -o warriors -m 0700 {written_mount.target}" in dockerfile

    # The config and the rules are the repository's files; the data is on a volume.
    command_flags = prometheus["command"]
    assert _host_path(prometheus, _flag(command_flags, "--config.file")) == PROMETHEUS_CONFIG
    assert [_host_path(prometheus, path) for path in config["rule_files"]] == [ALERT_RULES]
    data_mount, below = _mount_of(prometheus, _flag(command_flags, "--storage.tsdb.path"))
    assert not data_mount.is_bind
    assert not data_mount.read_only
    assert below == PurePosixPath(".")
    # Grafana's shortest step is the scrape interval.
    datasource = _yaml(DATASOURCES)["datasources"][0]
    assert datasource["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]
    assert _duration_seconds(config["global"]["evaluation_interval"]) <= 60, "too coarse for `for: 1m`"


def test_grafana_provisions_the_datasource_and_the_dashboard_behind_a_login() -> None:
    services = _services()
    grafana = services["grafana"]
    assert _host_path(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml") == DATASOURCES
    assert _host_path(grafana, "/etc/grafana/provisioning/dashboards/warriors.yml") == DASHBOARD_PROVIDERS
    (provider,) = _yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert _host_path(grafana, provider["options"]["path"]) == DASHBOARD.parent
    assert provider["allowUiUpdates"] is False
    data_mount, _ = _mount_of(grafana, "/var/lib/grafana")
    assert not data_mount.is_bind
    assert not data_mount.read_only
    # The data source is compose's Prometheus, on the port its health check asks.
    datasource = _yaml(DATASOURCES)["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert "http://127.0.0.1:9090/" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert datasource["access"] == "proxy"
    assert datasource["editable"] is False

    environment = grafana["environment"]
    assert "GF_PATHS_PROVISIONING" not in environment
    password = REQUIRED.fullmatch(environment["GF_SECURITY_ADMIN_PASSWORD"])
    assert password, "the admin password is not a required variable"
    assert password["name"] == "GRAFANA_ADMIN_PASSWORD"
    assert REQUIRED.fullmatch(environment["GF_SECURITY_SECRET_KEY"]), "Grafana's well-known default key"
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", example, flags=re.MULTILINE)
    assert grafana["ports"] == ["127.0.0.1:3001:3000"]
    assert "ports" not in services["prometheus"]


def test_monitoring_services_are_pinned_checked_and_restarted() -> None:
    services = _services()
    images = {"prometheus": r"prom/prometheus:v3\.\d+\.\d+", "grafana": r"grafana/grafana:12\.\d+\.\d+"}
    health = {"prometheus": "http://127.0.0.1:9090/-/ready", "grafana": "http://127.0.0.1:3000/api/health"}
    for name, image in images.items():
        service = services[name]
        assert re.fullmatch(image, service["image"]), f"{name}: not a pinned release: {service['image']}"
        assert service["restart"] == "unless-stopped"
        assert health[name] in " ".join(service["healthcheck"]["test"]), name
    assert services["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}


# promtool ---------------------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed (make test installs Debian's prometheus package)"
    return path


def _promtool_run(*arguments: str | Path) -> None:
    result = subprocess.run(
        [_promtool(), *map(str, arguments)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {arguments[:2]}:\n{result.stdout}\n{result.stderr}"


def test_promtool_checks_the_config_and_the_rules(tmp_path: Path) -> None:
    _promtool_run("check", "rules", ALERT_RULES)
    # The config as the container sees it: its key file and rule file at paths of this host.
    prometheus = _services()["prometheus"]
    config = _yaml(PROMETHEUS_CONFIG)
    key = tmp_path / "key"
    key.write_text("not-a-key\n")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key)
    config["rule_files"] = [str(_host_path(prometheus, path)) for path in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    _promtool_run("check", "config", copy)
    # The dashboard's queries parse: each as a recording rule, with Grafana's variables
    # given a value.
    grafana_variables = {"$__rate_interval": "1m", "$projection": ".*"}
    queries = []
    for query in _dashboard_queries():
        for variable, value in grafana_variables.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"a variable the check does not know: {query}"
        queries.append(query)
    rules = [{"record": f"dashboard:query{i}", "expr": query} for i, query in enumerate(queries)]
    dashboard_rules = tmp_path / "dashboard-queries.yml"
    dashboard_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool_run("check", "rules", dashboard_rules)


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    matchers = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{matchers}}}", "values": values}


def _expected(alert: str, value: str, **labels: str) -> dict[str, Any]:
    """The alert as Prometheus would fire it: its labels, and its annotations rendered."""
    rule = next(rule for rule in _rules() if rule["alert"] == alert)

    def render(text: str) -> str:
        return _TEMPLATE.sub(lambda match: labels[match["label"]] if match["label"] else value, text)

    return {
        "exp_labels": {**labels, **rule["labels"]},
        "exp_annotations": {key: render(text) for key, text in rule["annotations"].items()},
    }


def test_promtool_fires_each_alert_when_it_should_and_not_before(tmp_path: Path) -> None:
    """The alerts' unit tests (`promtool test rules`): series sampled every 15 s, each
    alert checked before its `for` has passed and after."""
    lag, seconds = "warriors_projection_lag_events", "warriors_projection_lag_seconds"
    healthy_relay = " ".join(["0", "3", "0", "7"] * 20)  # touches 0 between its batches
    tests = [
        {  # over the events threshold, over the seconds one, over both: one alert each
            "input_series": [
                _series(lag, "1500x60", projection="warriors_search"),
                _series(seconds, "10x60", projection="warriors_search"),
                _series(lag, "5x60", projection="warriors_read_model"),
                _series(seconds, "45x60", projection="warriors_read_model"),
                _series(lag, "2000x60", projection="warriors_cache"),
                _series(seconds, "60x60", projection="warriors_cache"),
                _series(lag, "999x60", projection="other"),
                _series(seconds, "30x60", projection="other"),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "ProjectionLagging", "exp_alerts": []},
                {"eval_time": "6m", "alertname": "ProjectionLagging", "exp_alerts": [
                    _expected("ProjectionLagging", "1500", projection="warriors_search"),
                    _expected("ProjectionLagging", "45", projection="warriors_read_model"),
                    _expected("ProjectionLagging", "2000", projection="warriors_cache"),
                ]},
            ],
        },
        {
            "input_series": [
                _series("warriors_projection_failed", "0x4 1x40", projection="warriors_search"),
                _series("warriors_projection_failed", "0x44", projection="warriors_cache"),
            ],
            "alert_rule_test": [
                {"eval_time": "1m45s", "alertname": "ProjectionFailed", "exp_alerts": []},
                {"eval_time": "2m30s", "alertname": "ProjectionFailed", "exp_alerts": [
                    _expected("ProjectionFailed", "1", projection="warriors_search"),
                ]},
            ],
        },
        {
            "input_series": [
                _series("warriors_parked_events", "3x60", projection="warriors_cache"),
                _series("warriors_parked_events", "0x60", projection="warriors_read_model"),
            ],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "ParkedEvents", "exp_alerts": []},
                {"eval_time": "11m", "alertname": "ParkedEvents", "exp_alerts": [
                    _expected("ParkedEvents", "3", projection="warriors_cache"),
                ]},
            ],
        },
    ]  # fmt: skip
    relay = "warriors_relay_lag_events"
    for values, fires in (
        ("50x80", True),  # stuck, no writes
        ("100x40 100+10x40", True),  # stuck, then writes going on
        ("500-5x80", False),  # catching up
        (healthy_relay, False),  # keeping up under writes
    ):
        alerts = [_expected("RelayStalled", values.partition("x")[0])] if fires else []
        tests.append({
            "input_series": [{"series": relay, "values": values}],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "RelayStalled", "exp_alerts": []},
                {"eval_time": "12m", "alertname": "RelayStalled", "exp_alerts": alerts},
            ],
        })  # fmt: skip
    tests.append({
        "input_series": [
            _series("up", "1x4 0x40", job="warriors-api", instance="api:8000"),
            _series("up", "1x44", job="other", instance="other:1"),
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "ApiDown", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "ApiDown", "exp_alerts": [
                _expected("ApiDown", "0", job="warriors-api", instance="api:8000"),
            ]},
        ],
    })  # fmt: skip
    for test in tests:
        test["interval"] = "15s"
    rules = tmp_path / "alerts.yml"
    shutil.copy(ALERT_RULES, rules)
    unit_tests = tmp_path / "alerts-test.yml"
    unit_tests.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "15s", "tests": tests})
    )
    _promtool_run("test", "rules", unit_tests)


@pytest.mark.parametrize("broken", ["ProjectionFailed", "ParkedEvents"])
def test_promtool_unit_tests_can_fail(tmp_path: Path, broken: str) -> None:
    """The alerts' unit tests catch a rule that no longer fires: with its threshold moved
    out of reach, the same input gives no alert."""
    rules = _yaml(ALERT_RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == broken:
                rule["expr"] = rule["expr"].replace("== 1", "== 2").replace("> 0", "> 100")
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    metric = next(iter(ALERTS[broken][0]))
    test = {
        "interval": "15s",
        "input_series": [_series(metric, "1x60", projection="warriors_cache")],
        "alert_rule_test": [
            {
                "eval_time": "12m",
                "alertname": broken,
                "exp_alerts": [_expected(broken, "1", projection="warriors_cache")],
            }
        ],
    }
    unit_tests = tmp_path / "alerts-test.yml"
    unit_tests.write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "tests": [test]}))
    result = subprocess.run(
        [_promtool(), "test", "rules", str(unit_tests)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    assert broken in result.stdout + result.stderr
