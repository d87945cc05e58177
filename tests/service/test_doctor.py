"""agentpool doctor: the pure parts directly, the checks against the real engine."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import docker
import pytest

from agentpool.config import Config, load_config_text
from agentpool.doctor import (
    LABEL_DOCTOR,
    Check,
    HostFacts,
    _explain_refusal,
    exit_code,
    format_check,
    format_report,
    parse_probe,
    run_doctor,
)
from agentpool.security import missing_capabilities

TOKEN = "f00dfeedcafe1234"

PROBE_OUTPUT = """@cgroups
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
devices\t5\t1\t1
net_cls\t0\t1\t1
@apparmor
absent
@caplast
40
@mountinfo
1039 961 0:186 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
1052 1039 8:1 /var/lib/docker/volumes/v/_data /agentpool-doctor rw,relatime - ext4 /dev/sda1 rw
@capbnd
dockerd 000001fffeffffff
dockerd 00000000a80425fb
containerd 000001fffeffffff
init 000001ffffffffff
@end
"""


def test_format_lines_and_exit_code() -> None:
    ok = Check("docker local reachable", True, "Docker 20.10 at unix:///var/run/docker.sock")
    bad = Check("jenkins credentials", False, "credentials rejected for user 'a' (HTTP 401)", "put a token")
    assert format_check(ok) == "OK  docker local reachable: Docker 20.10 at unix:///var/run/docker.sock"
    assert format_check(bad) == (
        "FAIL jenkins credentials: credentials rejected for user 'a' (HTTP 401) — fix: put a token"
    )
    assert format_report([ok, bad]).count("\n") == 2
    assert exit_code([ok]) == 0
    assert exit_code([ok, bad]) == 1


def test_parse_probe() -> None:
    facts = parse_probe(PROBE_OUTPUT)
    assert facts.cgroups["devices"] == (5, True)
    assert facts.cgroups["net_cls"] == (0, True)
    assert facts.apparmor == "absent"
    assert facts.cap_last == 40
    assert facts.volume_fs == "ext4"
    assert facts.engine_bounding == 0x000001FFFEFFFFFF  # dockerd's, not init's


def _pool(security: str, cap_drop: list[str] | None = None) -> Config:
    drop = f"    cap_drop: {cap_drop}\n" if cap_drop is not None else ""
    return load_config_text(
        "jenkins: {url: 'http://127.0.0.1:1/', user: u, token: t}\n"
        f"pools:\n  - name: p\n    labels: [docker]\n    image: img\n    security: {security}\n{drop}"
    )


def test_privileged_refusal_names_the_missing_capability() -> None:
    pool = _pool("privileged").pools[0]
    host = _pool("privileged").docker_hosts[0]
    refusal = "OCI runtime create failed: runc create failed: unable to apply caps: operation not permitted"
    check = _explain_refusal("security p", pool, host, refusal, parse_probe(PROBE_OUTPUT))
    assert not check.ok
    assert "lacks SYS_RESOURCE" in check.detail
    assert check.fix == "set pool p to `security: capabilities` with `cap_drop: [SYS_RESOURCE]`"


def test_capabilities_refusal_asks_to_drop_the_rest() -> None:
    config = _pool("capabilities", ["SYS_TIME"])
    refusal = "unable to apply caps: operation not permitted"
    check = _explain_refusal("s", config.pools[0], config.docker_hosts[0], refusal, parse_probe(PROBE_OUTPUT))
    assert check.fix == "add them to pool p's cap_drop: [SYS_RESOURCE]"
    unknown = _explain_refusal("s", config.pools[0], config.docker_hosts[0], refusal, HostFacts())
    assert "could not be read" in unknown.detail


# --- against the real engine ---------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(instance: str, jenkins_url: str, pools: str, hosts: str = "") -> Config:
    return load_config_text(
        f"jenkins:\n  url: {jenkins_url}\n  user: agentpool\n  token: {TOKEN}\n  timeout: 5s\n"
        f"instance: {instance}\n{hosts}pools:\n{pools}"
    )


def _engine_bounding_set() -> int:
    """The engine's CapBnd from /proc: the union over every dockerd (agents run inner ones)."""
    union, found = 0, False
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "dockerd":
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("CapBnd:"):
                            union |= int(line.split()[1], 16)
                            found = True
            except OSError:
                continue
    if not found:
        pytest.skip("dockerd does not run on this machine")
    return union


def _fs_of(path: str) -> str:
    best, fstype = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        mount = before.split()[4]
        if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, fstype = mount, after.split()[0]
    return fstype


@pytest.fixture
def instance() -> str:
    return f"svcdoc{secrets.token_hex(3)}"


def _leftovers(instance: str) -> list[str]:
    client = docker.from_env()
    try:
        selector = {"label": f"{LABEL_DOCTOR}={instance}"}
        containers = [c.name for c in client.containers.list(all=True, filters=selector, ignore_removed=True)]
        volumes = [v.name for v in client.volumes.list(filters=selector)]
        return containers + volumes
    finally:
        client.close()


@pytest.mark.docker
def test_doctor_on_this_machine(
    instance: str, busybox_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing_image = f"agentpool-test/absent:{secrets.token_hex(4)}"
    bounding = _engine_bounding_set()
    lacking = missing_capabilities(bounding, int(Path("/proc/sys/kernel/cap_last_cap").read_text()))
    pools = (
        f"  - {{name: priv, labels: [docker], image: '{busybox_image}', security: privileged}}\n"
        f"  - {{name: caps, labels: [docker], image: '{busybox_image}', security: capabilities,"
        f" cap_drop: {lacking}}}\n"
        f"  - {{name: gone, labels: [docker], image: '{missing_image}'}}\n"
    )
    config = _config(instance, f"http://127.0.0.1:{_closed_port()}/", pools)
    checks = run_doctor(config)
    by_name = {c.name: c for c in checks}
    report = format_report(checks)
    print(report)

    assert exit_code(checks) == 1
    assert TOKEN not in report
    reach = by_name["jenkins reachable"]
    assert not reach.ok and "Connection refused" in reach.detail
    assert not by_name["jenkins credentials"].ok
    assert by_name["jenkins credentials"].detail == "not checked: Jenkins is unreachable"

    assert by_name["docker local reachable"].ok
    gone = by_name[f"docker local image {missing_image}"]
    assert not gone.ok and "not present" in gone.detail and f"load {missing_image}" in gone.fix
    assert by_name[f"docker local image {busybox_image}"].ok

    caps = by_name["docker local security caps (capabilities)"]
    assert caps.ok, caps
    priv = by_name["docker local security priv (privileged)"]
    if lacking:  # this VM: privileged is refused, and doctor says which capability is why
        assert not priv.ok
        assert f"lacks {', '.join(lacking)}" in priv.detail
        assert "security: capabilities" in priv.fix and f"cap_drop: [{', '.join(lacking)}]" in priv.fix
    else:
        assert priv.ok, priv
    assert "docker local security gone (privileged)" not in by_name  # no image, no attempt

    cgroups = Path("/proc/cgroups").read_text().split("\n")
    devices = next(line.split() for line in cgroups if line.startswith("devices"))
    shared = [line.split()[0] for line in cgroups[1:] if line.split()[1:2] == devices[1:2]]
    cgroup_check = by_name["docker local cgroup devices"]
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():  # cgroup v1
        assert cgroup_check.ok == (shared == ["devices"] and devices[1] != "0")
        if cgroup_check.ok:
            assert f"own hierarchy ({devices[1]})" in cgroup_check.detail

    apparmor = Path("/sys/module/apparmor/parameters/enabled")
    expected = {"Y": "enabled", "N": "disabled"}.get(
        apparmor.read_text().strip() if apparmor.exists() else "", "not in the kernel"
    )
    assert expected in by_name["docker local apparmor"].detail

    client = docker.from_env()
    root = client.info()["DockerRootDir"]
    client.close()
    fs = _fs_of(root)
    volume = by_name["docker local volume filesystem"]
    assert f"volumes land on {fs} ({root})" in volume.detail
    assert volume.ok == (fs not in ("overlay", "aufs"))

    assert _leftovers(instance) == []


@pytest.mark.docker
def test_unreachable_docker_host(instance: str, tmp_path: Path) -> None:
    hosts = f"docker_hosts:\n  - {{name: far, url: 'unix://{tmp_path}/no.sock'}}\n"
    pools = "  - {name: p, labels: [docker], image: x}\n"
    checks = run_doctor(_config(instance, f"http://127.0.0.1:{_closed_port()}/", pools, hosts))
    far = [c for c in checks if c.name.startswith("docker far")]
    assert len(far) == 1
    assert far[0].name == "docker far reachable" and not far[0].ok
    assert "no.sock" in far[0].detail


@pytest.mark.docker
def test_capabilities_profile_unconfines_proc_sys(busybox_image: str) -> None:
    from agentpool.security import create_container

    client = docker.from_env()
    script = "grep -c ' /proc/sys ' /proc/self/mountinfo; true"
    outputs = {}
    try:
        for profile, kwargs in (("capabilities", {}), ("default", None)):
            name = f"svcsec-{secrets.token_hex(4)}"
            if kwargs is None:
                container = client.containers.create(busybox_image, ["sh", "-c", script], name=name)
            else:
                lacking = missing_capabilities(_engine_bounding_set())
                container = create_container(
                    client, busybox_image, "capabilities", lacking, command=["sh", "-c", script], name=name
                )
            try:
                container.start()
                container.wait(timeout=30)
                outputs[profile] = container.logs().decode().strip()
                attrs = client.api.inspect_container(container.id)["HostConfig"]
                if profile == "capabilities":
                    assert attrs["CapAdd"] == ["ALL"]
                    assert attrs["MaskedPaths"] == [] and attrs["ReadonlyPaths"] == []
            finally:
                container.remove(force=True)
    finally:
        client.close()
    assert outputs["capabilities"] == "0"  # /proc/sys not re-mounted read-only
    assert int(outputs["default"]) >= 1  # the default profile does mount it read-only


def test_a_server_that_is_not_jenkins_is_named(instance: str) -> None:
    from agentpool.doctor import check_jenkins
    from agentpool.service.http import ServiceHTTP
    from agentpool.service.metrics import Metrics

    other = ServiceHTTP("127.0.0.1:0", Metrics(), lambda: (True, "ok"), dict, dict, dict)  # type: ignore[arg-type]
    other.start()
    try:
        pools = "  - {name: p, labels: [docker], image: x}\n"
        checks = check_jenkins(_config(instance, other.url + "/", pools))
    finally:
        other.stop()
    assert [c.ok for c in checks] == [False, False, False]
    # agentpool's own listener: its status page answers 200 at /, but it is not Jenkins
    assert "answers HTTP 200 without an X-Jenkins header" in checks[0].detail
    assert checks[1].detail == "not checked: the URL does not answer as Jenkins"
