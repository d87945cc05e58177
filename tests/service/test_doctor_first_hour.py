"""Doctor on a first machine: a missing token is one FAIL line among the others (validate still
refuses it), and cap_drop advice names only capabilities the engine accepts."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from agentpool.config import ConfigError, load_config_text
from agentpool.doctor import (
    LABEL_DOCTOR,
    _explain_refusal,
    engine_knows_capability,
    load_for_doctor,
    parse_probe,
)

from .test_doctor import PROBE_OUTPUT

REPO = Path(__file__).resolve().parents[2]
REFUSAL = "OCI runtime create failed: runc create failed: unable to apply caps: operation not permitted"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write(tmp_path: Path, jenkins: str, pools: str = "  - {name: p, labels: [docker], image: x}\n") -> Path:
    path = tmp_path / "agentpool.yaml"
    path.write_text(
        f"jenkins:\n  url: http://127.0.0.1:{_closed_port()}/\n  user: agentpool\n  timeout: 2s\n{jenkins}"
        f"instance: fh{secrets.token_hex(3)}\npools:\n{pools}"
    )
    return path


def _agentpool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentpool", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_token_file_is_one_doctor_problem_not_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "jenkins.token"
    path = _write(tmp_path, f"  token_file: {missing}\n")
    config, problem = load_for_doctor(path)
    assert config.pools[0].name == "p" and config.jenkins.token is None
    assert problem is not None and not problem.ok and problem.name == "jenkins token"
    assert f"cannot read token file {str(missing)!r}" in problem.detail
    assert f"install -m 0600 /dev/stdin {missing}" in problem.fix


def test_other_config_errors_still_stop_doctor(tmp_path: Path) -> None:
    path = _write(
        tmp_path, f"  token_file: {tmp_path}/none\n", "  - {name: p, labels: [docker], image: x, bogus: 1}\n"
    )
    with pytest.raises(ConfigError, match=r"pools\[0\]\.bogus: unknown key"):
        load_for_doctor(path)


def test_validate_refuses_the_missing_token_and_doctor_reports_it_once_and_goes_on(
    tmp_path: Path, busybox_image: str
) -> None:
    path = _write(
        tmp_path,
        f"  token_file: {tmp_path}/jenkins.token\n",
        f"  - {{name: p, labels: [docker], image: '{busybox_image}', security: capabilities}}\n",
    )
    validate = _agentpool("validate", "--config", str(path))
    assert validate.returncode == 2 and "jenkins.token_file: cannot read token file" in validate.stderr

    doctor = _agentpool("doctor", "--config", str(path))
    assert doctor.returncode == 1, doctor.stderr
    lines = doctor.stdout.splitlines()
    token_lines = [line for line in lines if "token" in line]
    assert len(token_lines) == 1, lines
    assert (
        token_lines[0].startswith("FAIL jenkins token: cannot read token file")
        and "— fix: " in token_lines[0]
    )
    assert lines[0].startswith("FAIL jenkins reachable:")  # it went on: Jenkins, then every engine check
    assert f"OK  docker local image {busybox_image}: pool p: present" in lines
    assert any("docker local security p (capabilities)" in line for line in lines), lines
    assert any("docker local volume filesystem" in line for line in lines), lines
    assert "Traceback" not in doctor.stderr


def _pool(cap_drop: list[str]) -> tuple[object, object]:
    config = load_config_text(
        "jenkins: {url: 'http://127.0.0.1:1/', user: u, token: t}\n"
        f"pools:\n  - name: p\n    labels: [docker]\n    image: img\n    security: capabilities\n"
        f"    cap_drop: {cap_drop}\n"
    )
    return config.pools[0], config.docker_hosts[0]


def test_cap_advice_leaves_out_what_the_engine_does_not_know() -> None:
    # The engine's bounding set lacks SYS_RESOURCE (24) and PERFMON (38); this engine knows no PERFMON.
    facts = parse_probe(PROBE_OUTPUT.replace("dockerd 000001fffeffffff", "dockerd 000001bffeffffff"))
    pool, host = _pool([])
    everything = _explain_refusal("s", pool, host, REFUSAL, facts)  # type: ignore[arg-type]
    assert everything.fix == "add them to pool p's cap_drop: [SYS_RESOURCE, PERFMON]"
    known = _explain_refusal("s", pool, host, REFUSAL, facts, accepts=lambda cap: cap != "PERFMON")  # type: ignore[arg-type]
    assert known.fix == "add them to pool p's cap_drop: [SYS_RESOURCE]"
    assert "PERFMON" not in known.detail


def test_a_cap_drop_the_engine_does_not_know_is_named() -> None:
    pool, host = _pool(["PERFMON"])
    refusal = 'invalid CapDrop: unknown capability: "CAP_PERFMON"'
    check = _explain_refusal("s", pool, host, refusal, None)  # type: ignore[arg-type]
    assert check.fix.startswith("remove PERFMON from pool p's cap_drop")


@pytest.mark.docker
def test_the_engine_is_asked_which_capability_names_it_knows(busybox_image: str) -> None:
    instance = f"fh{secrets.token_hex(3)}"
    client = docker.from_env()
    try:
        assert engine_knows_capability(client, busybox_image, "SYS_RESOURCE", instance)
        assert not engine_knows_capability(client, busybox_image, "NO_SUCH_CAPABILITY", instance)
        # What the engine itself answers for PERFMON (Docker 20.10: unknown; newer: known).
        cli = subprocess.run(
            ["docker", "create", "--cap-drop", "PERFMON", "--network", "none", busybox_image, "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        if cli.returncode == 0:
            subprocess.run(["docker", "rm", cli.stdout.strip()], capture_output=True, check=False)
        assert engine_knows_capability(client, busybox_image, "PERFMON", instance) == (cli.returncode == 0)
        assert (
            client.containers.list(
                all=True, filters={"label": f"{LABEL_DOCTOR}={instance}"}, ignore_removed=True
            )
            == []
        )
    finally:
        client.close()
