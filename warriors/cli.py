"""`warriors` command line: run the platform, apply migrations, manage the embedded database.

`make run` calls `warriors run`.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from uuid import UUID

import prometheus_client
import typer
from confluent_kafka import KafkaException
from honcho.printer import Printer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from orchestration.instance import (
    DAGSTER_ROLE,
    code_server_args,
    code_server_workspace,
    create_storage,
    ensure_database,
    ensure_storage,
    prepare_home,
    storage_url,
)
from warriors.adapters.kafka_bus import BusProducer, BusUnavailable, ensure_topics
from warriors.bus.consumer import ProjectionConsumer
from warriors.bus.relay import KafkaRelay
from warriors.config import PROJECT_ROOT, Settings, get_settings
from warriors.eventstore.database import apply_migrations
from warriors.eventstore.roles import ServiceRole, enable_logins, local_password, local_passwords, url_as
from warriors.http_server import serve_command
from warriors.logs import configure_logging
from warriors.projections.base import Projection
from warriors.projections.catalog import ProjectionName, all_projections, opened, rebuild
from warriors.projections.engine import ProjectionEngine, ProjectionNotFailed, register
from warriors.projections.live import run_live
from warriors.projections.parked import NothingParked, discard, parked_events
from warriors.projections.parked import replay as replay_parked
from warriors.projections.rebuild import RebuildFailed, RebuildInProgress
from warriors.projections.status import projection_statuses
from warriors.retrying import Stopped, retry_until_stopped
from warriors.secret_files import without_password, write_secret
from warriors.security.identity import Role
from warriors.security.key_store import UnknownKey, create_key, ensure_key_file, list_keys, revoke_key
from warriors.security.master_key import MasterKeyMissing, require_master_key
from warriors.security.personal_data import new_master_key_text
from warriors.servers.embedded_postgres import EmbeddedPostgres
from warriors.services import start_all, stop_all
from warriors.supervisor import Supervisor
from warriors.tracing import setup_tracing

log = logging.getLogger("warriors.cli")
# Each try at creating the topics waits this long for the broker (then a pause, and again).
TOPICS_TIMEOUT_SECONDS = 10.0
app = typer.Typer(help="The warriors platform.", no_args_is_help=True, add_completion=False)


def _say(message: str) -> None:
    typer.secho(f"[warriors] {message}", fg=typer.colors.CYAN, err=True)


def _configure_logging(process: str) -> None:
    """Logs, and (when configured) traces and a metrics endpoint, of this process."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level, process)
    setup_tracing(settings.otel_exporter_otlp_endpoint, process)
    if settings.metrics_port is not None:
        # Plain HTTP without a key: for a private network only (compose does not publish it).
        prometheus_client.start_http_server(settings.metrics_port, settings.metrics_host)
        log.info("metrics on http://%s:%s/metrics", settings.metrics_host, settings.metrics_port)


def _embedded() -> EmbeddedPostgres:
    settings = get_settings()
    return EmbeddedPostgres(settings.data_dir / "postgres", settings.embedded_pg_port)


@contextmanager
def _database() -> Iterator[str]:
    """DATABASE_URL, or the embedded server: started if it is not running, and stopped
    again on the way out only if this command started it."""
    with _databases() as (url, _):
        yield url


@contextmanager
def _databases() -> Iterator[tuple[str, str]]:
    """(URL for tools, URL for the services): the same, or for the embedded server its
    TCP URL and its Unix socket URL."""
    settings = get_settings()
    if settings.database_url:
        _say("using DATABASE_URL")
        yield settings.database_url, settings.database_url
        return
    server = _embedded()
    if server.running():
        _say(f"using the running embedded PostgreSQL (data in {server.data_dir})")
        yield server.start(), server.socket_url()
        return
    _say(f"starting embedded PostgreSQL (data in {server.data_dir}) ...")
    url = server.start()
    _say(f"PostgreSQL ready at 127.0.0.1:{server.port} (and a Unix socket for the services)")
    try:
        yield url, server.socket_url()
    finally:
        _say("stopping embedded PostgreSQL ...")
        server.stop()


@app.command()
def run() -> None:
    """Start the platform: PostgreSQL (embedded unless DATABASE_URL is set), migrations,
    the HTTP entry point (command and query services), the live projector and Dagster
    (webserver, daemon, code server), supervised together (warriors/supervisor.py: a
    process that dies is restarted, with a limit). Ctrl-C stops everything."""
    # Private folders (mode 0700): the workers' metrics files, the Dagster code server's socket.
    metrics_dir = tempfile.mkdtemp(prefix="warriors-metrics-")
    code_dir = tempfile.mkdtemp(prefix="warriors-dagster-")
    try:
        with _databases() as (url, service_url):
            _serve(url, service_url, metrics_dir, code_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(code_dir, ignore_errors=True)
        _say("stopped")


def _serve(url: str, service_url: str, metrics_dir: str, code_dir: str) -> None:
    settings = get_settings()
    _say(f"migrations: {apply_migrations(url)} applied, schema up to date")
    key_file = settings.local_key_file()
    made = ensure_key_file(url, key_file)
    _say(f"API key (operator) {'created in' if made else 'in'} {key_file} (mode 0600): send it as"
         f' -H "Authorization: Bearer $(cat {key_file})"')  # fmt: skip
    personal_key_env = _local_personal_key(settings)
    base = f"http://{settings.http_host}:{settings.http_port}"
    _say(f"command API  {base}/api/v1/commands/warriors")
    _say(f"query API    {base}/api/v1/queries/warriors")
    _say(f"OpenAPI docs {base}/docs   health {base}/health/ready   metrics {base}/metrics")
    if settings.read_auth == "open":  # compose and Kubernetes set READ_AUTH=required
        _say("reads are open to anyone who reaches the port (READ_AUTH=open, a development default;"
             " set READ_AUTH=required to ask every read for a key)")  # fmt: skip
    dagster_storage = _dagster_storage(url)
    dagster_home = prepare_home(settings.data_dir / "dagster")
    _say(f"Dagster UI   http://{settings.dagster_host}:{settings.dagster_port} (storage: database"
         f" {urlsplit(dagster_storage).path.lstrip('/')}, home {dagster_home})")  # fmt: skip
    _say(f"{settings.http_workers} HTTP worker(s), the live projector, Dagster (webserver, daemon and"
         " one code server); press Ctrl-C to stop")  # fmt: skip
    api_url, projector_url = _service_urls(url, service_url)
    # Prometheus' multiprocess mode adds up the metrics of all HTTP workers.
    env = {**os.environ, **personal_key_env, "DATABASE_URL": api_url, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    projector_env = {**env, "DATABASE_URL": projector_url}
    dagster_env = {
        **projector_env,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_POSTGRES_URL": dagster_storage,
    }
    create_storage(dagster_env)
    bin_dir = Path(sys.executable).parent
    supervisor = Supervisor(Printer(sys.stdout))
    http = serve_command(
        "api.gateway:create_app", settings.http_host, settings.http_port, settings.http_workers
    )
    supervisor.add_process("http", shlex.join(http), env=env)
    # Fed from Kafka, the supervised projector restarted after a crash takes its partitions
    # back at once (static membership) instead of after the session time-out; the id names
    # this host and data folder, so that two platforms on one broker never share it.
    static_id = settings.kafka_group_instance_id or _local_instance_id(settings.data_dir)
    supervisor.add_process(
        "projector",
        f"{sys.executable} -m warriors.cli project",
        env={**projector_env, "KAFKA_GROUP_INSTANCE_ID": static_id},
    )
    if settings.kafka_bootstrap_servers:
        supervisor.add_process("relay", f"{sys.executable} -m warriors.cli relay", env=projector_env)
    code_socket = Path(code_dir) / "code.sock"
    workspace = code_server_workspace(dagster_home, code_socket)
    code_server = shlex.join([sys.executable, *code_server_args(code_socket)])
    supervisor.add_process("dagster-code", code_server, env=dagster_env, cwd=str(PROJECT_ROOT))
    # The webserver and the daemon start once the code server listens (the supervisor starts
    # everything at once; either would otherwise begin with a location that failed to load).
    wait = f"while [ ! -S {shlex.quote(str(code_socket))} ]; do sleep 0.1; done; exec "
    web = [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", settings.dagster_host,
           "-p", str(settings.dagster_port)]  # fmt: skip
    supervisor.add_process("dagster-web", wait + shlex.join(web), env=dagster_env, cwd=str(PROJECT_ROOT))
    daemon = [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)]
    supervisor.add_process(
        "dagster-daemon", wait + shlex.join(daemon), env=dagster_env, cwd=str(PROJECT_ROOT)
    )
    returncode = supervisor.loop()
    if returncode not in (0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise typer.Exit(returncode)


def _local_personal_key(settings: Settings) -> dict[str, str]:
    """`make run`'s personal data master key: PERSONAL_DATA_KEY(_FILE) when set, otherwise
    a file kept with the data (made once, mode 0600), given to every child. Losing it
    makes every warrior's name and date of birth unreadable: back it up with the data."""
    if settings.personal_data_key is not None or settings.personal_data_key_file is not None:
        require_master_key()
        return {}
    path = settings.local_personal_key_file()
    made = not path.exists()
    if made:
        write_secret(path, new_master_key_text() + "\n")
    _say(f"personal data master key {'created in' if made else 'in'} {path} (mode 0600; back it up"
         " with the data: without it no name or date of birth can be read)")  # fmt: skip
    return {"PERSONAL_DATA_KEY_FILE": str(path)}


def _service_urls(url: str, service_url: str) -> tuple[str, str]:
    """The URLs of the HTTP services and of the projections. On the embedded server, each
    logs in as its own least-privileged role (passwords made once, kept with the data);
    with DATABASE_URL, everything uses that URL (give production its roles with
    `warriors db-roles`: docs/security.md)."""
    if get_settings().database_url:
        return service_url, service_url
    passwords = local_passwords(_embedded().data_dir)
    enable_logins(url, passwords)
    _say("services connect as warriors_api (HTTP) and warriors_projector (projections, Dagster)")
    return (
        url_as(service_url, ServiceRole.API, passwords[ServiceRole.API]),
        url_as(service_url, ServiceRole.PROJECTOR, passwords[ServiceRole.PROJECTOR]),
    )


@app.command("db-roles")
def db_roles() -> None:
    """Give the services' roles (warriors_api, warriors_projector; made by the migrations)
    a login with API_DB_PASSWORD and PROJECTOR_DB_PASSWORD. Run it as the owner (the
    DATABASE_URL that migrates); run it again to rotate the passwords."""
    settings = get_settings()
    secrets = {
        ServiceRole.API: settings.api_db_password,
        ServiceRole.PROJECTOR: settings.projector_db_password,
    }
    missing = [f"{role.name}_DB_PASSWORD" for role, secret in secrets.items() if secret is None]
    if missing:
        _say(f"set {' and '.join(missing)} first")
        raise typer.Exit(2)
    with _database() as url:
        enable_logins(url, {role: secret.get_secret_value() for role, secret in secrets.items() if secret})
    _say("warriors_api and warriors_projector can log in (passwords set, not shown)")


@app.command()
def project() -> None:
    """Run the live projector: keep every projection caught up with the store (or, with
    KAFKA_BOOTSTRAP_SERVERS, with the topic the relay fills: one consumer group each)."""
    _configure_logging("projector")
    _master_key_or_exit()
    with _database() as url:
        asyncio.run(_project(url))


def _master_key_or_exit() -> None:
    try:
        require_master_key()
    except MasterKeyMissing as exc:
        _say(f"refusing to start: {exc}")
        raise typer.Exit(2) from None


def _local_instance_id(data_dir: Path) -> str:
    """`<host>-<a hash of the data folder>`: stable across restarts of this platform."""
    folder = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    host = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in socket.gethostname())[:60] or "host"
    return f"{host}-{folder}"


async def _project(url: str) -> None:
    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    bootstrap = settings.kafka_bootstrap_servers
    projections = all_projections(at_least_once=bool(bootstrap))
    try:
        async with _pool(url, "warriors-projector") as pool:
            if bootstrap:  # each projection a consumer group of the topic the relay fills
                await _topics_ready(bootstrap, stop)
                for projection in projections:
                    await register(pool, projection.name)  # its parked events and status
                dead_letters = BusProducer(bootstrap)
                session_timeout_ms = round(settings.kafka_session_timeout_seconds * 1000)
                max_poll_interval_ms = round(settings.kafka_max_poll_interval_seconds * 1000)

                async def consume(projection: Projection) -> None:
                    """A consumer, made again after a broker error (the group rebalances;
                    the batch not committed is read again, which the applies make harmless)."""
                    await retry_until_stopped(
                        f"consumer of {projection.name}",
                        lambda: ProjectionConsumer(pool, projection, bootstrap, dead_letters,
                                                   session_timeout_ms=session_timeout_ms,
                                                   max_poll_interval_ms=max_poll_interval_ms,
                                                   group_instance_id=settings.kafka_group_instance_id,
                                                   ).run(stop),
                        stop, (KafkaException, BusUnavailable), log,
                    )  # fmt: skip

                with contextlib.suppress(Stopped):
                    await asyncio.gather(*(consume(p) for p in projections))
                dead_letters.close()
            else:  # tailing the store
                engines = [ProjectionEngine(pool, p, settings.projector_batch_size) for p in projections]
                await run_live(engines, url, stop, idle_seconds=settings.projector_idle_seconds)
    finally:
        for projection in projections:
            await projection.close()


@app.command()
def relay() -> None:
    """Run the relay: publish every stored event to Kafka (KAFKA_BOOTSTRAP_SERVERS), its
    checkpoint moved only once the broker confirmed the batch."""
    _configure_logging("relay")
    settings = get_settings()
    if not settings.kafka_bootstrap_servers:
        _say("KAFKA_BOOTSTRAP_SERVERS is not set (make services writes it to .env.services)")
        raise typer.Exit(2)
    with _database() as url:
        asyncio.run(_relay(url, settings.kafka_bootstrap_servers))


async def _relay(url: str, bootstrap: str) -> None:
    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await _topics_ready(bootstrap, stop)
    except Stopped:
        return
    relay = KafkaRelay(BusProducer(bootstrap))
    try:
        async with _pool(url, "warriors-relay") as pool:
            engine = ProjectionEngine(pool, relay, settings.projector_batch_size)
            await run_live([engine], url, stop, idle_seconds=settings.projector_idle_seconds)
    finally:
        await relay.close()


async def _topics_ready(bootstrap: str, stop: asyncio.Event) -> None:
    """The topics exist: created if missing, retried while the broker is not up yet."""
    settings = get_settings()
    shape = (settings.kafka_partitions, settings.kafka_replication, settings.kafka_retention_hours)
    await retry_until_stopped(
        "creating the Kafka topics",
        lambda: asyncio.to_thread(ensure_topics, bootstrap, *shape, TOPICS_TIMEOUT_SECONDS),
        stop, (KafkaException, BusUnavailable), log,
    )  # fmt: skip


@asynccontextmanager
async def _pool(url: str, name: str = "warriors-cli") -> AsyncIterator[AsyncConnectionPool[AsyncConnection]]:
    """A small pool; `name` shows as application_name in pg_stat_activity."""
    kwargs = {"autocommit": True, "application_name": name}
    async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs=kwargs) as pool:
        yield pool


projections = typer.Typer(
    help="Operate projections: status, retry, park, replay, rebuild.", no_args_is_help=True
)
app.add_typer(projections, name="projections")


@projections.command("status")
def projections_status() -> None:
    """Each projection: status, position, lag (events and seconds), parked events waiting,
    last error. With Kafka set, lag is the relay's plus the consumer group's."""
    kafka = bool(get_settings().kafka_bootstrap_servers)

    async def show(url: str) -> None:
        async with _pool(url) as pool, pool.connection() as conn:
            for s in await projection_statuses(conn, kafka=kafka):
                typer.echo(
                    f"{s.name:<28} {s.status:<8} position {s.position:<10} lag {s.lag_events:>7} events"
                    f" {s.lag_seconds:>8.1f}s  parked {s.parked_events:<4} {s.last_error or ''}"
                )

    with _database() as url:
        asyncio.run(show(url))


@projections.command("parked")
def projections_parked(
    name: ProjectionName,
    discarded: Annotated[bool, typer.Option("--discarded", help="Also the discarded ones.")] = False,
) -> None:
    """The projection's parked events, oldest first: event, position, type, warrior, when,
    the error (and, with --discarded, those discarded and why)."""

    async def show(url: str) -> None:
        async with _pool(url) as pool, pool.connection() as conn:
            events = await parked_events(conn, name, discarded=discarded)
        for e in events:
            state = f"discarded {e.discarded_at:%Y-%m-%d %H:%M}: {e.discard_reason}" if e.discarded_at else ""
            typer.echo(
                f"{e.event_id}  position {e.position:<10} {e.event_type or '?':<22} warrior {e.aggregate_id}"
                f"  parked {e.parked_at:%Y-%m-%d %H:%M:%S}  {e.error}  {state}".rstrip()
            )
        if not events:
            _say(f"{name}: no parked events")

    with _database() as url:
        asyncio.run(show(url))


@projections.command("replay-parked")
def projections_replay_parked(
    name: ProjectionName,
    event: Annotated[
        list[UUID] | None, typer.Option("--event", help="This parked event (repeatable); default: all.")
    ] = None,
) -> None:
    """After fixing the cause, apply parked events: the projection is rebuilt with them
    (blue/green for a table or an index, in place for the cache). One that fails again
    stays parked with its new error, and the live projection is untouched."""

    async def go(url: str) -> None:
        async with _pool(url) as pool:
            chosen, report = await replay_parked(pool, name, event, progress=_say)
        _say(f"{name}: {len(chosen)} parked event(s) applied; {report.events} events in the rebuild")

    with _database() as url:
        try:
            asyncio.run(go(url))
        except (NothingParked, RebuildFailed, RebuildInProgress) as exc:
            _say(str(exc))
            raise typer.Exit(1) from None


@projections.command("discard")
def projections_discard(
    name: ProjectionName,
    event_id: UUID,
    reason: Annotated[str, typer.Option(help="Why it is never to be applied (recorded).")],
) -> None:
    """Never apply a parked event: it stays passed over and is no longer counted as waiting."""

    async def go(url: str) -> None:
        async with _pool(url) as pool, pool.connection() as conn:
            found = await discard(conn, name, event_id, reason)
        _say(f"{name}: discarded {found.event_id} (position {found.position}): {found.discard_reason}")

    with _database() as url:
        try:
            asyncio.run(go(url))
        except NothingParked as exc:
            _say(str(exc))
            raise typer.Exit(1) from None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--reason") from None


def _operate(name: ProjectionName, action: Callable[[ProjectionEngine], Awaitable[str]]) -> None:
    async def go(url: str) -> None:
        async with _pool(url) as pool, opened(name) as projection:
            engine = ProjectionEngine(pool, projection)
            await engine.register()
            try:
                _say(await action(engine))
            except ProjectionNotFailed as exc:
                _say(str(exc))
                raise typer.Exit(1) from None

    with _database() as url:
        asyncio.run(go(url))


@projections.command("retry")
def projections_retry(name: ProjectionName) -> None:
    """Clear a FAILED projection; it tries the failed event again (fix the cause first)."""

    async def retry(engine: ProjectionEngine) -> str:
        await engine.retry()
        return f"{name}: RUNNING again; the live projector retries the failed event"

    _operate(name, retry)


@projections.command("park")
def projections_park(name: ProjectionName) -> None:
    """Park a FAILED projection's event (kept in projection_parked_events) and move on."""

    async def park(engine: ProjectionEngine) -> str:
        event = await engine.park()
        return f"{name}: parked event {event.event_id} at position {event.position}; RUNNING again"

    _operate(name, park)


@projections.command("replay")
def projections_replay(name: ProjectionName) -> None:
    """Empty a projection and rebuild it from position 0, in place (stop the live
    projector first; the Dagster rebuild job does this without downtime)."""

    async def replay(engine: ProjectionEngine) -> str:
        await engine.reset()
        total = 0
        while True:
            result = await engine.run_batch()
            total += result.applied
            if result.applied:
                _say(f"{name}: {total} events applied (position {result.end.position})")
            if result.failed or result.applied == 0:
                return f"{name}: replay finished, {total} events, status {result.status}"

    _operate(name, replay)


def _dagster_storage(database_url: str) -> str:
    """Dagster's storage URL: DAGSTER_POSTGRES_URL as given (its database created if
    missing), or database `dagster` on the platform's server owned by the role
    warriors_dagster, which has no right on the platform's database (`database_url`, the
    owner's, makes both). The role's password: DAGSTER_DB_PASSWORD, or on the embedded
    server one made once and kept with its data. With DATABASE_URL and no
    DAGSTER_DB_PASSWORD, Dagster's storage is that URL's user's, as every service is."""
    settings = get_settings()
    if settings.dagster_postgres_url:
        ensure_database(settings.dagster_postgres_url)
        return settings.dagster_postgres_url
    storage = storage_url(database_url)
    if settings.dagster_db_password is not None:
        return ensure_storage(database_url, storage, settings.dagster_db_password.get_secret_value())
    if settings.database_url is None:
        return ensure_storage(database_url, storage, local_password(_embedded().data_dir, DAGSTER_ROLE))
    ensure_database(storage)
    return storage


@app.command("dagster-storage")
def dagster_storage() -> None:
    """Create Dagster's storage database if missing, owned by the role warriors_dagster
    (password: DAGSTER_DB_PASSWORD), and print its URL without the password (the full stack
    runs this as the owner, before the Dagster webserver and daemon)."""
    with _database() as url:
        typer.echo(without_password(_dagster_storage(url)))


@projections.command("rebuild")
def projections_rebuild(name: ProjectionName) -> None:
    """Rebuild a projection blue/green, without downtime: a shadow table from position 0,
    then an atomic swap (the live projector may keep running). The Dagster job
    `rebuild_projection` does the same from the UI."""

    async def go(url: str) -> None:
        async with _pool(url) as pool:
            await register(pool, str(name))
            batch_size = get_settings().projector_batch_size
            try:
                await rebuild(pool, name, batch_size=batch_size, progress=_say)
            except (RebuildInProgress, RebuildFailed) as exc:
                _say(str(exc))
                raise typer.Exit(1) from None

    with _database() as url:
        asyncio.run(go(url))


personal_key = typer.Typer(
    help="The personal data master key (PERSONAL_DATA_KEY): names and dates of birth are sealed"
    " with each warrior's own key, wrapped by this one.",
    no_args_is_help=True,
)
app.add_typer(personal_key, name="personal-key")


@personal_key.command("new")
def personal_key_new() -> None:
    """Print a new random master key (32 bytes, base64), its only line: put it in
    PERSONAL_DATA_KEY or a file named by PERSONAL_DATA_KEY_FILE, and keep a copy with the
    database's backups. A platform whose warriors were sealed under another key cannot read
    them with this one (it says so)."""
    typer.echo(new_master_key_text())


keys = typer.Typer(
    help="API keys: create (printed once), list, revoke. Roles: reader, writer, operator.",
    no_args_is_help=True,
)
app.add_typer(keys, name="keys")


@keys.command("create")
def keys_create(
    role: Annotated[
        Role,
        typer.Option(
            help="reader, writer (also reads), monitor (metrics and status only) or operator (everything)."
        ),
    ],
    name: Annotated[str, typer.Option(help="Whose or what for, shown by `keys list`.")] = "unnamed",
) -> None:
    """Create a key and print it on standard output, its only line (it is stored hashed:
    keep it, it cannot be shown again)."""
    with _database() as url:
        try:
            record, key = create_key(url, role, name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--name") from None
    _say(f"created key {record.id} ({record.role}, {record.name!r})")
    typer.echo(key)


@keys.command("ensure-file")
def keys_ensure_file(
    path: Annotated[Path, typer.Argument(help="Where the key is kept (created with mode 0600).")],
    role: Annotated[Role, typer.Option(help="reader, writer, monitor or operator.")],
    name: Annotated[str, typer.Option(help="Shown by `keys list`.")],
) -> None:
    """Keep a live key in PATH: made (and written, mode 0600) if the file is missing or its
    key no longer works, left alone otherwise. For a service that reads its key from a
    file (compose's Prometheus). Prints nothing but where the key is."""
    with _database() as url:
        made = ensure_key_file(url, path, role, name)
    _say(f"{'created a' if made else 'kept the'} {role} key in {path}")


@keys.command("list")
def keys_list() -> None:
    """Every key: id, role, name, created, revoked (never the key itself)."""
    with _database() as url:
        records = list_keys(url)
    for record in records:
        revoked = f"revoked {record.revoked_at:%Y-%m-%d %H:%M:%S}" if record.revoked_at else "active"
        created = f"{record.created_at:%Y-%m-%d %H:%M:%S}"
        typer.echo(f"{record.id}  {record.role:<8}  {created}  {revoked:<27}  {record.name}")
    if not records:
        _say("no keys yet: `warriors keys create --role writer --name NAME`")


@keys.command("revoke")
def keys_revoke(key_id: Annotated[UUID, typer.Argument(help="The key's id (from `keys list`).")]) -> None:
    """Revoke a key: refused by the database at once, by every service within
    AUTH_CACHE_SECONDS."""
    with _database() as url:
        try:
            record = revoke_key(url, key_id)
        except UnknownKey as exc:
            _say(str(exc))
            raise typer.Exit(1) from None
    _say(f"revoked key {record.id} ({record.role}, {record.name!r})")


services_app = typer.Typer(
    help="The project's real servers for local use (make services).", no_args_is_help=True
)
app.add_typer(services_app, name="services")


@services_app.command("start")
def services_start() -> None:
    """Start Kafka and Redis (idempotent) and write their URLs to .env.services."""
    start_all(_say)


@services_app.command("stop")
def services_stop() -> None:
    """Stop them and remove .env.services."""
    stop_all(_say)


@app.command()
def migrate() -> None:
    """Apply pending migrations to DATABASE_URL (or the embedded server)."""
    with _database() as url:
        _say(f"migrations: {apply_migrations(url)} applied")


@app.command("db-start")
def db_start(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (default: DATA_DIR/postgres).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: EMBEDDED_PG_PORT).")] = None,
) -> None:
    """Start the embedded PostgreSQL and print its URL without the password, which is in
    the data folder's `superuser-password` (mode 0600). It keeps running."""
    server = _embedded()
    server = EmbeddedPostgres(data_dir or server.data_dir, port or server.port)
    typer.echo(without_password(server.start()))
    _say(f"the password is in {server.password_file}")


@app.command("db-stop")
def db_stop(data_dir: Annotated[Path | None, typer.Option(help="Data folder.")] = None) -> None:
    """Stop the embedded PostgreSQL."""
    server = _embedded()
    EmbeddedPostgres(data_dir or server.data_dir, server.port).stop()


if __name__ == "__main__":
    app()
