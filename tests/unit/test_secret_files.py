"""Secret files are 0600 from the start; printed URLs carry no password."""

import os
import stat
from pathlib import Path

from warriors.secret_files import without_password, write_secret


def test_a_secret_file_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)  # the most permissive: a plain write would give 0666
    try:
        path = tmp_path / "folder" / "secret"
        write_secret(path, "first\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)  # someone loosened it; a rewrite replaces the file, mode and all
        write_secret(path, "second\n")
    finally:
        os.umask(previous)
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret"], "no staged file left behind"


def test_printed_urls_carry_no_password() -> None:
    assert without_password("postgresql://postgres:s3cr3t@127.0.0.1:5433/warriors") == (
        "postgresql://postgres:***@127.0.0.1:5433/warriors"
    )
    assert (
        without_password("postgresql://u:p@/warriors?host=/tmp/x&port=1")
        == "postgresql://u:***@/warriors?host=/tmp/x&port=1"
    )
    assert without_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert without_password("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
