"""Files that hold a secret (keys, passwords, URLs with passwords): readable by their
owner only from the moment they exist, never written first and restricted after."""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, replacing it atomically if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.unlink(missing_ok=True)
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(staged, path)


def without_password(url: str) -> str:
    """`url` with its password (if any) shown as `***`: what may be printed."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
