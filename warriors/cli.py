"""`warriors` command line: run the platform, apply migrations, manage the embedded database.

`make run` calls `warriors run`.
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from warriors.adapters.embedded_postgres import EmbeddedPostgres
from warriors.config import get_settings
from warriors.eventstore.database import apply_migrations

app = typer.Typer(help="The warriors platform.", no_args_is_help=True, add_completion=False)


def _say(message: str) -> None:
    typer.secho(f"[warriors] {message}", fg=typer.colors.CYAN, err=True)


def _embedded() -> EmbeddedPostgres:
    settings = get_settings()
    return EmbeddedPostgres(settings.data_dir / "postgres", settings.embedded_pg_port)


def _database_url() -> tuple[str, EmbeddedPostgres | None]:
    settings = get_settings()
    if settings.database_url:
        _say("using DATABASE_URL")
        return settings.database_url, None
    server = _embedded()
    _say(f"starting embedded PostgreSQL (data in {server.data_dir}) ...")
    url = server.start()
    _say(f"PostgreSQL ready at {url}")
    return url, server


@app.command()
def run() -> None:
    """Start the platform: PostgreSQL (embedded unless DATABASE_URL is set), migrations,
    and the HTTP entry point. Ctrl-C stops everything."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    url, server = _database_url()
    metrics_dir: str | None = None
    try:
        applied = apply_migrations(url)
        _say(f"migrations: {applied} applied, schema up to date")
        # The app factory reads DATABASE_URL through Settings, in worker processes and
        # (with one worker) in this one, whose cached settings predate the URL.
        os.environ["DATABASE_URL"] = url
        get_settings.cache_clear()
        metrics_dir = tempfile.mkdtemp(prefix="warriors-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        base = f"http://{settings.http_host}:{settings.http_port}"
        _say(f"command API  {base}/api/v1/commands/warriors")
        _say(f"OpenAPI docs {base}/docs   health {base}/health/ready   metrics {base}/metrics")
        _say(f"{settings.http_workers} worker(s); press Ctrl-C to stop")
        uvicorn.run(
            "api.gateway:create_app",
            factory=True,
            host=settings.http_host,
            port=settings.http_port,
            workers=settings.http_workers,
            log_level="warning",
            access_log=False,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if server is not None:
            _say("stopping embedded PostgreSQL ...")
            server.stop()
        _say("stopped")


@app.command()
def migrate() -> None:
    """Apply pending migrations to DATABASE_URL (or the embedded server)."""
    url, _ = _database_url()
    _say(f"migrations: {apply_migrations(url)} applied")


@app.command("db-start")
def db_start(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (default: DATA_DIR/postgres).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: EMBEDDED_PG_PORT).")] = None,
) -> None:
    """Start the embedded PostgreSQL and print its URL (it keeps running)."""
    server = _embedded()
    server = EmbeddedPostgres(data_dir or server.data_dir, port or server.port)
    typer.echo(server.start())


@app.command("db-stop")
def db_stop(data_dir: Annotated[Path | None, typer.Option(help="Data folder.")] = None) -> None:
    """Stop the embedded PostgreSQL."""
    server = _embedded()
    EmbeddedPostgres(data_dir or server.data_dir, server.port).stop()


if __name__ == "__main__":
    app()
