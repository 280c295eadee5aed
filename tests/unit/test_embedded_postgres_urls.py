"""URLs of the embedded server (no server needed)."""

from pathlib import Path

from warriors.servers.embedded_postgres import EmbeddedPostgres


def test_services_get_the_unix_socket_when_its_path_fits(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path, 5433)
    assert server.url() == "postgresql://postgres@127.0.0.1:5433/warriors"
    assert server.socket_url("db") == f"postgresql://postgres@/db?host={tmp_path.resolve()}&port=5433"


def test_too_long_a_socket_path_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    server = EmbeddedPostgres(deep, 5433)
    assert server.socket_dir is None
    assert server.socket_url() == server.url()


def test_a_generated_password_goes_into_the_urls(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path, 5433)
    server.password_file.write_text("s3cret\n")
    assert server.url().startswith("postgresql://postgres:s3cret@127.0.0.1:5433/")
    assert server.socket_url().startswith("postgresql://postgres:s3cret@/warriors?host=")
