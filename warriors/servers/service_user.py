"""Servers that refuse to run as root (PostgreSQL; OpenSearch by policy here) run as a
dedicated system user when the platform is started as root: created on first use, with
the folders above their data and their programs made traversable for it."""

import logging
import os
import pwd
import stat
import subprocess
from pathlib import Path

log = logging.getLogger("warriors.adapters")


def service_user(name: str) -> pwd.struct_passwd | None:
    """The system user `name` (created if missing) when running as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        log.info("creating system user %s to run a server (not as root)", name)
        # check=False: a concurrent start may have created it; getpwnam below decides.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=False,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def make_traversable(path: Path) -> None:
    """Let a service user reach `path`: add o+x to each folder above it that lacks it."""
    for folder in reversed(path.resolve().parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("making %s traversable (o+x) for a service user", folder)
            folder.chmod(mode | stat.S_IXOTH)
