"""The locked dependency set against PyPI's vulnerability data (pip-audit).

The locked set is constraints.txt plus the direct pins of pyproject.toml (dependencies
and every extra): exactly what `make install` puts on a fresh machine. pip-audit checks
each pinned version against PyPI's JSON API (`--vulnerability-service pypi`, the same
OSV records PyPI shows on its pages; needs the network). Any vulnerability fails the
test, unless security/audit-ignore.txt lists its id with the reason it does not apply.

Where PyPI answers only for a project's latest release (this workplace's registry access
serves `/pypi/NAME/json` but not `/pypi/NAME/VERSION/json`, so pip-audit reports every
dependency as "not found on PyPI"), the test audits the pins that are the latest release
from the project's own record, which then carries the same vulnerability list, and names
the older pins it could not audit. A dependency PyPI does not have at all fails the test.
"""

import json
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
IGNORE_FILE = ROOT / "security" / "audit-ignore.txt"
_IGNORE_LINE = re.compile(r"(?P<id>[A-Z][A-Z0-9]*-[A-Za-z0-9-]+)\s+(?P<reason>\S.*)")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    ids: tuple[str, ...]  # the advisory's id first, then its aliases
    fixed_in: tuple[str, ...]
    summary: str

    def line(self) -> str:
        fixed = ", ".join(self.fixed_in) or "no fixed release"
        return (
            f"{self.package}=={self.version}  {' / '.join(self.ids)}  (fixed in: {fixed})\n    {self.summary}"
        )


def locked_set() -> dict[str, str]:
    """{canonical name: version} of constraints.txt and pyproject.toml's exact pins."""
    pins: dict[str, tuple[str, str]] = {}  # name: (version, where)
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [
        *project["dependencies"],
        *(d for extra in project["optional-dependencies"].values() for d in extra),
    ]
    sources = [(line, "constraints.txt") for line in lines] + [(d, "pyproject.toml") for d in direct]
    for text, where in sources:
        text = text.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        [spec] = requirement.specifier  # every line of the locked set is one exact pin
        assert spec.operator == "==", f"{where}: {text!r} is not an exact pin"
        name = canonicalize_name(requirement.name)
        if name in pins:
            assert pins[name][0] == spec.version, f"{name}: {pins[name]} against {spec.version} in {where}"
        pins[name] = (spec.version, where)
    return {name: version for name, (version, _) in sorted(pins.items())}


def ignored() -> dict[str, str]:
    """{vulnerability id: why it does not apply}, from security/audit-ignore.txt."""
    entries: dict[str, str] = {}
    for number, line in enumerate(IGNORE_FILE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _IGNORE_LINE.fullmatch(line)
        assert match, f"{IGNORE_FILE.name}:{number}: expected `ID  reason it does not apply`, got {line!r}"
        entries[match["id"]] = match["reason"]
    return entries


def pip_audit(pins: dict[str, str], ignore: dict[str, str], folder: Path) -> dict[str, Any]:
    requirements, report = folder / "locked.txt", folder / "audit.json"
    requirements.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    command = [
        sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps", "--disable-pip",
        "--vulnerability-service", "pypi", "--timeout", "30", "--progress-spinner", "off",
        "--format", "json", "--output", str(report),
        *(option for vulnerability in ignore for option in ("--ignore-vuln", vulnerability)),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    # 0: nothing found; 1: vulnerabilities found (in the report). Anything else is an error.
    assert finished.returncode in (0, 1), f"pip-audit failed:\n{finished.stderr}"
    assert report.exists(), f"pip-audit wrote no report:\n{finished.stderr}"
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def _findings_of(package: str, version: str, vulnerabilities: list[dict[str, Any]]) -> list[Finding]:
    """One finding per vulnerability: PyPI lists the same one under each database's id
    (PYSEC-..., GHSA-...), each naming the others as aliases."""
    findings: list[Finding] = []
    for v in vulnerabilities:
        ids = (v["id"], *v.get("aliases", []))
        if v.get("withdrawn") or any(set(ids) & set(known.ids) for known in findings):
            continue
        fixed_in = tuple(v.get("fix_versions", v.get("fixed_in", [])))
        summary = " ".join((v.get("summary") or v.get("description") or v.get("details") or "").split())
        findings.append(Finding(package, version, ids, fixed_in, summary[:200]))
    return findings


def from_project_records(skipped: dict[str, str]) -> tuple[list[Finding], list[str], list[str]]:
    """Audit, from PyPI's project records (`/pypi/NAME/json`), the pins pip-audit could not
    look up: (findings, pins not audited as they are not the latest release, pins PyPI
    does not have)."""

    def record(name: str) -> dict[str, Any] | None:
        answer = client.get(f"https://pypi.org/pypi/{name}/json")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found

    with httpx.Client(timeout=30, follow_redirects=True) as client, ThreadPoolExecutor(8) as pool:
        records = dict(zip(skipped, pool.map(record, skipped), strict=True))
    findings: list[Finding] = []
    older: list[str] = []
    missing: list[str] = []
    for name, version in skipped.items():
        project = records[name]
        if project is None or version not in project["releases"]:
            missing.append(f"{name}=={version}")
        elif project["info"]["version"] != version:
            older.append(f"{name}=={version} (latest {project['info']['version']})")
        else:
            findings += _findings_of(name, version, project.get("vulnerabilities") or [])
    return findings, older, missing


def test_no_known_vulnerability_in_the_locked_dependencies(tmp_path: Path) -> None:
    pins = locked_set()
    ignore = ignored()
    report = pip_audit(pins, ignore, tmp_path)

    findings: list[Finding] = []
    skipped: dict[str, str] = {}
    for dependency in report["dependencies"]:
        name = canonicalize_name(dependency["name"])
        if "skip_reason" in dependency:
            skipped[name] = pins[name]
        else:
            findings += _findings_of(name, dependency["version"], dependency["vulns"])
    audited_by_pip_audit = len(pins) - len(skipped)
    more, older, missing = from_project_records(skipped) if skipped else ([], [], [])
    findings += more
    # pip-audit already left the ignored ones out; the project records' are filtered here.
    reported = [f for f in findings if not ignore.keys() & set(f.ids)]
    stale = sorted(set(ignore) - {i for f in findings for i in f.ids})

    summary = "\n".join([
        f"{len(pins)} locked dependencies:",
        f"  {audited_by_pip_audit} audited by pip-audit (PyPI's record of the release)",
        f"  {len(skipped) - len(older) - len(missing)} audited from PyPI's project record (latest release)",
        f"  {len(older)} not audited (PyPI's per-release API unavailable): {', '.join(older) or '-'}",
        f"  ignored as not applicable ({IGNORE_FILE.name}): {', '.join(sorted(ignore)) or '-'}",
    ])  # fmt: skip
    print(summary)
    if stale:
        print(f"no longer reported, remove from {IGNORE_FILE.name}: {', '.join(stale)}")
    assert not missing, f"not on PyPI, so not audited: {', '.join(missing)}\n{summary}"
    assert not reported, (
        f"{len(reported)} known vulnerabilities in the locked dependencies. Raise the pin to a fixed"
        f" release, or add the id to security/audit-ignore.txt with why it does not apply:\n"
        + "\n".join(f.line() for f in reported)
        + f"\n{summary}"
    )


def test_ignored_vulnerabilities_say_why() -> None:
    """Each line of the ignore list is `ID  reason`; a bare id is refused."""
    entries = ignored()
    assert all(len(reason) >= 20 for reason in entries.values()), entries
