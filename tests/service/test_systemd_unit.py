"""The unit as scripts/install-service lays it down passes ``systemd-analyze verify``."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "agentpool.service"
DOCS = REPO / "docs" / "service.md"

HARDENING = (
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "ProcSubset",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "RemoveIPC",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "UMask",
    "SupplementaryGroups",
    "StateDirectory",
    "LoadCredential",
    "LimitNOFILE",
)


def _directives(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"],
            capture_output=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("systemd-analyze")
        if found:
            return found
    pytest.skip("systemd-analyze missing and `apt-get install systemd` was not possible here")


def test_unit_has_the_service_contract() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == "notify"
    assert d["NotifyAccess"] == "main"
    assert d["Restart"] == "on-failure"
    assert d["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert d["User"] == "agentpool"
    assert d["SupplementaryGroups"] == "docker"
    assert d["LoadCredential"] == "jenkins.token:/etc/agentpool/jenkins.token"
    assert d["ExecStart"].endswith("agentpool run --config /etc/agentpool/agentpool.yaml")
    assert "WatchdogSec" in d
    assert d["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    missing = [key for key in HARDENING if key not in d]
    assert missing == []


def test_every_hardening_line_is_explained_in_the_docs() -> None:
    docs = DOCS.read_text()
    assert [key for key in HARDENING if f"`{key}=" not in docs] == []


def test_installed_unit_verifies_clean(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    root = tmp_path / "root"
    prefix = root / "opt" / "agentpool"
    example = tmp_path / "example.yaml"
    example.write_text(
        "jenkins:\n  url: http://127.0.0.1:8080/\n  user: agentpool\n"
        "  token_file: /etc/agentpool/jenkins.token\ninstance: agentpool\n"
    )
    install = [str(REPO / "scripts" / "install-service"), "--root", str(root), "--prefix", str(prefix)]
    install += ["--example", str(example), "--offline"]
    run = subprocess.run(
        install,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr

    unit = root / "etc" / "systemd" / "system" / "agentpool.service"
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    d = _directives(unit.read_text())
    assert d["ExecStart"].split()[0] == str(prefix / "venv" / "bin" / "agentpool")
    config = (root / "etc" / "agentpool" / "agentpool.yaml").read_text()
    assert "  token_file: ${CREDENTIALS_DIRECTORY}/jenkins.token\n" in config
    token = root / "etc" / "agentpool" / "jenkins.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600

    # The venv runs agentpool from the installed copy, not from this checkout.
    where = subprocess.run(
        [str(prefix / "venv" / "bin" / "python"), "-c", "import agentpool; print(agentpool.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert where.stdout.strip() == str(prefix / "src" / "agentpool" / "__init__.py")

    # A second run keeps the operator's config and token.
    token.write_text("secret")
    (root / "etc" / "agentpool" / "agentpool.yaml").write_text("edited\n")
    again = subprocess.run(
        install,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert token.read_text() == "secret"
    assert (root / "etc" / "agentpool" / "agentpool.yaml").read_text() == "edited\n"


def test_install_service_refuses_unknown_arguments() -> None:
    run = subprocess.run(
        [str(REPO / "scripts" / "install-service"), "--bogus"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert "unknown argument --bogus" in run.stderr
