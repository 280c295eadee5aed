"""What the two JVM servers (Kafka, OpenSearch) share: the JDK's tools, and their runtime
classpath resolved once by Maven from Maven Central into the project's data folder."""

import logging
import os
import shutil
import subprocess
from pathlib import Path

from warriors.servers.base import ServerError, folder_lock

log = logging.getLogger("warriors.servers")

RESOLVE_TIMEOUT_SECONDS = 900.0  # a first resolution downloads tens of MB


def jdk_tool(name: str, why: str, error: type[ServerError] = ServerError) -> str:
    """`java`, `javac`, ...: JAVA_HOME's if set and it has it, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / name).exists():
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise error(f"`{name}` is not installed: {why}")
    return found


def cached_jars(classpath_file: Path) -> str | None:
    """The classpath recorded in `classpath_file`, unless missing or a jar has gone (the
    Maven repository was moved or cleaned)."""
    if not classpath_file.exists():
        return None
    jars = classpath_file.read_text().strip()
    if not jars or not all(Path(jar).exists() for jar in jars.split(os.pathsep)):
        return None
    return jars


def resolve_classpath(
    pom: Path,
    output_file: Path,
    maven_repo: Path,
    log_path: Path,
    *,
    scope: str | None = None,
    error: type[ServerError] = ServerError,
) -> str:
    """Resolve `pom`'s dependencies (`scope` only, if given) with Maven into `maven_repo`
    and write their classpath to `output_file` (atomically); Maven's output goes to
    `log_path`. Returns the classpath."""
    output_file.parent.mkdir(parents=True, exist_ok=True)
    # One resolution per output at a time, across threads and processes (a cluster's
    # nodes start side by side, and on a fresh machine all of them would resolve into the
    # same .partial file): the others wait, then find the classpath made.
    with folder_lock(output_file.with_name(output_file.name + ".lock")):
        if (ready := cached_jars(output_file)) is not None:
            return ready
        return _resolve(pom, output_file, maven_repo, log_path, scope, error)


def _resolve(
    pom: Path,
    output_file: Path,
    maven_repo: Path,
    log_path: Path,
    scope: str | None,
    error: type[ServerError],
) -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise failure(f"Maven (mvn) is not installed: it resolves {pom} once", log_path, error)
    partial = output_file.with_name(output_file.name + ".partial")
    command = [mvn, "-B", "-q", "-f", str(pom), f"-Dmaven.repo.local={maven_repo}",
               "dependency:build-classpath", f"-Dmdep.outputFile={partial}"]  # fmt: skip
    if scope is not None:
        command.append(f"-Dmdep.includeScope={scope}")
    logged_run(command, log_path, error=error)
    if not partial.exists():
        raise failure(f"Maven wrote no classpath for {pom}", log_path, error)
    partial.replace(output_file)
    return output_file.read_text().strip()


def logged_run(
    command: list[str],
    log_path: Path,
    *,
    classpath: str | None = None,
    error: type[ServerError] = ServerError,
) -> None:
    """Run `command` to completion with its output appended to `log_path`, with umask 022
    (a service user must read the jars and classes written)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_handle:
        log_handle.write(f"\n=== {' '.join(command)}\n".encode())
        log_handle.flush()
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CLASSPATH": classpath} if classpath else None,
                timeout=RESOLVE_TIMEOUT_SECONDS,
                umask=0o022,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise error(f"{command[0]} timed out; see {log_path}") from exc
    if result.returncode != 0:
        raise error(f"{Path(command[0]).name} failed ({result.returncode}); see {log_path}")


def failure(message: str, log_path: Path, error: type[ServerError] = ServerError) -> ServerError:
    """The error to raise, also written to the log file that it names."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log_handle:
        log_handle.write(f"\n=== {message}\n")
    return error(f"{message}; see {log_path}")
