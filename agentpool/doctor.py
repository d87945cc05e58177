"""``agentpool doctor``: a preflight that says exactly what is wrong and how to fix it.

An agent that never comes online is the hardest failure to debug from the daemon's log: a
token typo, a missing permission, an image that was never loaded, an engine that refuses
``--privileged``, a volume on overlayfs. Doctor tries each of these for real (it creates and
deletes a throwaway Jenkins node, starts a container with each pool's security profile on
each host) and prints one line per check: ``OK  name: detail`` or
``FAIL name: detail — fix: …``.

Host facts (capability bounding set, cgroup hierarchies, AppArmor, the filesystem volumes
land on) are read by a short-lived probe container, so they are the Docker *host's* facts,
also for a remote engine. The probe runs with default confinement and ``pid: host`` (to read
the engine's own capability bounding set); it needs ``sh`` and ``cat`` in the pool image.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests
import yaml

from agentpool.adapters.docker import DockerHost, docker_client
from agentpool.adapters.jenkins import JenkinsAdapter
from agentpool.backend import Backend
from agentpool.config import Config, ConfigError, DockerHostConfig, PoolConfig, load_config
from agentpool.doctor_transport import connection_fix
from agentpool.errors import ErrorKind, ExternalError, JenkinsError
from agentpool.logs import redact, register_secret
from agentpool.planner.ownership import read_marker
from agentpool.security import create_container, host_config_kwargs, missing_capabilities
from agentpool.state import State, default_state_dir

# On doctor's probe containers and volumes (value: the instance). Deliberately not
# agentpool.instance: the daemon must not mistake them for its agents' leftovers.
LABEL_DOCTOR = "agentpool.doctor"
PROBE_MOUNT = "/agentpool-doctor"
OVERLAY_FILESYSTEMS = frozenset({"overlay", "overlayfs", "aufs"})

PROBE_SCRIPT = r"""
echo @cgroups; cat /proc/cgroups
echo @apparmor; cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo absent
echo @caplast; cat /proc/sys/kernel/cap_last_cap
echo @mountinfo; cat /proc/self/mountinfo
echo @capbnd
for p in /proc/[0-9]*; do
  c=$(cat "$p/comm" 2>/dev/null) || continue
  case "$c" in
    dockerd|containerd)
      while read -r k v; do [ "$k" = CapBnd: ] && echo "$c $v"; done < "$p/status";;
  esac
done
while read -r k v; do [ "$k" = CapBnd: ] && echo "init $v"; done < /proc/1/status
echo @end
"""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def format_check(check: Check) -> str:
    if check.ok:
        return f"OK  {check.name}: {check.detail}"
    fix = f" — fix: {check.fix}" if check.fix else ""
    return f"FAIL {check.name}: {check.detail}{fix}"


def format_report(checks: Iterable[Check]) -> str:
    return "".join(format_check(c) + "\n" for c in checks)


def exit_code(checks: Iterable[Check]) -> int:
    """0 when every check passed, else 1."""
    return 0 if all(c.ok for c in checks) else 1


_TOKEN_KEYS = ("token_file", "token_env", "token")


def load_for_doctor(path: str | os.PathLike[str]) -> tuple[Config, Check | None]:
    """The config, and the token problem when the token is its only problem.

    ``validate`` and ``run`` refuse a config whose token cannot be read; doctor is the
    preflight that should say so, as one FAIL line among the others, and go on checking
    everything that needs no token. Any other error is raised as :class:`ConfigError`.
    """
    try:
        return load_config(path), None
    except ConfigError as exc:
        token_errors = [e for e in exc.errors if any(f": jenkins.{k}: " in e for k in _TOKEN_KEYS)]
        if not token_errors or len(token_errors) != len(exc.errors):
            raise
        problem = "; ".join(e.split(": ", 2)[-1] for e in token_errors)
    # Nothing but the token is wrong, so the file parses and validates without resolving it.
    config = Config.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    return config, Check(
        "jenkins token", False, f"{problem}; credentials and permissions not checked", _token_fix(config)
    )


def _token_fix(config: Config) -> str:
    jenkins_config = config.jenkins
    if jenkins_config.token_env:
        return f"export {jenkins_config.token_env}=API-TOKEN (the API token of jenkins.user {jenkins_config.user!r})"
    where = os.path.expandvars(jenkins_config.token_file or "/etc/agentpool/jenkins.token")
    return (
        f"write the API token of jenkins.user {jenkins_config.user!r} to {where}: "
        f"install -m 0600 /dev/stdin {where} <<<'API-TOKEN' (Jenkins: your user → Security → API Token)"
    )


def run_doctor(config: Config, token_problem: Check | None = None) -> list[Check]:
    """Every check for ``config``'s Jenkins and Docker hosts, in a stable order.

    With ``token_problem`` (from :func:`load_for_doctor`) the token checks are that one line.
    """
    token = config.jenkins.token.get_secret_value() if config.jenkins.token else ""
    register_secret(token)
    checks = check_jenkins(config, token_problem)
    for host in config.docker_hosts:
        checks += check_docker_host(config, host)
    return [Check(c.name, c.ok, redact(c.detail), redact(c.fix)) for c in checks]


def _short(exc: BaseException | str, limit: int = 300) -> str:
    """The first line of an error, bounded (Jenkins answers errors with whole HTML pages)."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _http_error(exc: requests.RequestException, timeout: float) -> str:
    """A requests error as the operator needs it: refused, unresolvable, timed out."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g}s (jenkins.timeout)"
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip().rstrip(",")
    return _short(exc)


def _suffix() -> str:
    return secrets.token_hex(3)


# --- Jenkins -------------------------------------------------------------------------------


def check_jenkins(config: Config, token_problem: Check | None = None) -> list[Check]:
    checks = _check_jenkins(config, token_problem)
    if token_problem is None:
        return checks
    # Without a token, reachability is all that can be checked: the token line replaces the rest.
    return [checks[0], token_problem]


def _check_jenkins(config: Config, token_problem: Check | None) -> list[Check]:
    cfg = config.jenkins
    url = cfg.url if cfg.url.endswith("/") else cfg.url + "/"
    token = cfg.token.get_secret_value() if cfg.token else ""
    headers = {"Accept-Language": "en"}
    try:
        answer = requests.get(url, timeout=cfg.timeout, headers=headers)
    except requests.RequestException as exc:
        return [
            Check(
                "jenkins reachable",
                False,
                f"{url}: {_http_error(exc, cfg.timeout)}",
                "check jenkins.url, that the controller runs, and that this host can reach it",
            ),
            *_skipped("Jenkins is unreachable"),
        ]
    version = answer.headers.get("X-Jenkins")
    if answer.history and not answer.url.startswith(url):
        # POSTs (node creation) do not survive a redirect: the URL must be the real one.
        return [
            Check(
                "jenkins reachable",
                False,
                f"{url} redirects to {answer.url}",
                "set jenkins.url to the URL Jenkins redirects to (scheme, host and path)",
            ),
            *_skipped("jenkins.url redirects elsewhere"),
        ]
    if not version:
        return [
            Check(
                "jenkins reachable",
                False,
                f"{url} answers HTTP {answer.status_code} without an X-Jenkins header: not a Jenkins root",
                "set jenkins.url to the controller's root URL (the page that shows the dashboard)",
            ),
            *_skipped("the URL does not answer as Jenkins"),
        ]
    checks = [Check("jenkins reachable", True, f"Jenkins {version} at {url}")]
    if token_problem is not None:
        return checks
    credentials = _check_credentials(url, cfg.user, token, cfg.timeout, headers)
    checks.append(credentials)
    if credentials.ok:
        adapter = JenkinsAdapter(url, cfg.user, token, timeout=cfg.timeout)
        checks += check_permissions(adapter, cfg.user, config.instance)
        checks.append(check_neighbours(adapter, config))
    else:
        checks += _permissions_skipped("not checked: credentials failed")
    return checks


def _skipped(why: str) -> list[Check]:
    return [
        Check("jenkins credentials", False, f"not checked: {why}", "fix the check above first"),
        *_permissions_skipped(f"not checked: {why}"),
    ]


def _permissions_skipped(detail: str) -> list[Check]:
    return [Check("jenkins permissions", False, detail, "fix the check above first")]


def _check_credentials(url: str, user: str, token: str, timeout: float, headers: dict[str, str]) -> Check:
    name = "jenkins credentials"
    try:
        answer = requests.get(url + "me/api/json", auth=(user, token), timeout=timeout, headers=headers)
    except requests.RequestException as exc:
        return Check(
            name, False, f"GET {url}me/api/json: {_http_error(exc, timeout)}", "check the network to Jenkins"
        )
    credentials_fix = (
        "put a valid API token of jenkins.user in the token file (Jenkins: your user → Security → "
        "API Token → Add new token)"
    )
    if answer.status_code == 401:
        return Check(name, False, f"credentials rejected for user {user!r} (HTTP 401)", credentials_fix)
    if answer.status_code == 403:
        return Check(
            name,
            False,
            f"user {user!r} is not allowed to read Jenkins (HTTP 403)",
            "grant the user Overall/Read (and the rest of the README's permission list)",
        )
    if answer.status_code != 200:
        return Check(name, False, f"GET {url}me/api/json answered HTTP {answer.status_code}", credentials_fix)
    try:
        me = answer.json()
    except ValueError:
        me = {}
    who = me.get("id") or me.get("fullName") or user if isinstance(me, dict) else user
    if who == "anonymous":
        return Check(name, False, "Jenkins treats the request as anonymous", credentials_fix)
    return Check(name, True, f"authenticated as {who}")


# Every permission agentpool's Jenkins user needs, and why. The README's list is checked
# against this one (tests/service/test_doctor_jenkins.py); doctor checks each in this order.
PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("Overall/Read", "every call: reading nodes and the queue"),
    (
        "Job/Read",
        "on every job whose builds agentpool serves: Jenkins lists only the queue items of jobs the "
        "user may read, so without it the queue looks empty and no agent is ever started",
    ),
    ("Agent/Create", "creating an agent's node (POST /computer/doCreateItem)"),
    (
        "Agent/Connect",
        "reading the agent's secret (jenkins-agent.jnlp), and bringing a node back online",
    ),
    (
        "Agent/Disconnect",
        "taking a node offline before removing it, and cordoning one-shot agents (changeOfflineCause)",
    ),
    ("Agent/Delete", "removing an agent's node (doDelete)"),
    (
        "Overall/Administer",
        "optional: exact labels through /scriptText when Jenkins names a node instead of the label; "
        "without it agentpool infers them (and says so in status)",
    ),
)
_FIX = {p: f"grant jenkins.user {p} ({why})" for p, why in PERMISSIONS}


def _forbidden(exc: JenkinsError) -> bool:
    return exc.kind is ErrorKind.FORBIDDEN


def check_permissions(adapter: JenkinsAdapter, user: str, instance: str) -> list[Check]:
    """One check per permission, with the calls the loop makes, on a throw-away node."""
    checks = [Check("jenkins permission Overall/Read", True, f"user {user!r} reads Jenkins")]
    checks.append(_check_job_read(adapter, user))
    node = f"{instance}-doctor-{_suffix()}"
    steps: list[tuple[str, str, Callable[[], object]]] = [
        (
            "Agent/Create",
            f"created node {node}",
            lambda: adapter.create_node(
                node,
                labels=[f"{instance}-doctor"],
                executors=1,
                remote_fs="/home/jenkins/agentpool-doctor",
                exclusive=True,
                websocket=True,
                description="agentpool doctor: permission check, deleted right away",
            ),
        ),
        ("Agent/Connect", f"read the agent secret of {node}", lambda: adapter.agent_secret(node)),
        (
            "Agent/Disconnect",
            f"took {node} offline",
            lambda: adapter.set_temporarily_offline(node, True, "agentpool doctor: permission check"),
        ),
        ("Agent/Delete", f"deleted node {node}", lambda: adapter.delete_node(node)),
    ]
    created = False
    for permission, done, step in steps:
        name = f"jenkins permission {permission}"
        if permission != "Agent/Create" and not created:
            detail = "not checked: the throw-away node could not be created"
            checks.append(Check(name, False, detail, _FIX["Agent/Create"]))
            continue
        try:
            step()
        except JenkinsError as exc:
            fix = _FIX[permission] + (
                f"; then delete node {node} by hand" if permission == "Agent/Delete" else ""
            )
            if _forbidden(exc):
                detail = f"user {user!r} lacks {permission}: HTTP 403 ({_short(str(exc))})"
            else:
                detail = _short(str(exc))
            checks.append(Check(name, False, detail, fix))
            continue
        created = created or permission == "Agent/Create"
        checks.append(Check(name, True, done))
    checks.append(_check_administer(adapter))
    return checks


def _check_job_read(adapter: JenkinsAdapter, user: str) -> Check:
    """What can be proven about Job/Read: Jenkins hides unreadable jobs from every list, ours too."""
    name = "jenkins permission Job/Read"
    try:
        jobs = adapter.visible_jobs()
    except JenkinsError as exc:
        return Check(name, False, _short(str(exc)), _FIX["Job/Read"])
    if jobs == 0 and _administers(adapter):
        # An administrator reads every job: the controller has none yet, nothing is hidden.
        return Check(name, True, f"user {user!r} administers Jenkins; the controller has no job yet")
    if jobs == 0:
        return Check(
            name,
            False,
            f"user {user!r} sees no job at all: without Job/Read the queue looks empty to agentpool "
            "(or the controller has no job yet)",
            _FIX["Job/Read"],
        )
    return Check(
        name,
        True,
        f"user {user!r} reads {jobs} job(s); doctor cannot see jobs hidden from this user either: "
        "builds of a job it may not read never show in its queue",
    )


def _administers(adapter: JenkinsAdapter) -> bool:
    try:
        return adapter.exact_labels() is not None
    except JenkinsError:
        return False


def _check_administer(adapter: JenkinsAdapter) -> Check:
    name = "jenkins permission Overall/Administer"
    try:
        allowed = adapter.exact_labels() is not None
    except JenkinsError as exc:
        return Check(name, True, f"optional; not checked: {_short(str(exc))}")
    if allowed:
        return Check(name, True, "granted (optional): exact labels through /scriptText")
    return Check(
        name,
        True,
        "not granted (optional): when Jenkins names a node instead of a build's label, agentpool "
        "infers the label and says so in status",
    )


def check_neighbours(adapter: JenkinsAdapter, config: Config) -> Check:
    """Another daemon at our ``instance`` on this controller (a second Docker host run as a second daemon)."""
    name = "jenkins other daemons"
    daemon = State(config.state_dir or default_state_dir(), config.instance).daemon_id()
    try:
        nodes = adapter.read_nodes()
    except JenkinsError as exc:
        return Check(name, False, _short(str(exc)), "check the checks above")
    others: dict[str, int] = {}
    for node in nodes:
        marker = read_marker(node)
        if marker is not None and marker[0] == config.instance and marker[1] != daemon:
            others[marker[1]] = others.get(marker[1], 0) + 1
    if not others:
        return Check(
            name, True, f"no other agentpool daemon at instance {config.instance!r} (this one: {daemon})"
        )
    listed = ", ".join(f"{d} ({n} node(s))" for d, n in sorted(others.items()))
    return Check(
        name,
        False,
        f"other agentpool daemon(s) at instance {config.instance!r}: {listed}; this one is {daemon}",
        "give each daemon its own `instance` in its config (they never remove each other's nodes, "
        "but their metrics and names mix)",
    )


# --- Docker hosts --------------------------------------------------------------------------


@dataclass(slots=True)
class HostFacts:
    """What the probe container saw on a Docker host."""

    cgroups: dict[str, tuple[int, bool]] = field(default_factory=dict)  # subsystem -> (hierarchy, enabled)
    apparmor: str = "absent"  # "Y", "N" or "absent" (not built into the kernel)
    cap_last: int | None = None
    bounding: dict[str, int] = field(default_factory=dict)  # "dockerd" | "containerd" | "init" -> CapBnd
    volume_fs: str | None = None

    @property
    def engine_bounding(self) -> int | None:
        """The capability bounding set containers get at most: the engine's own."""
        for process in ("dockerd", "containerd", "init"):
            if process in self.bounding:
                return self.bounding[process]
        return None


def parse_probe(output: str, mount: str = PROBE_MOUNT) -> HostFacts:
    """Parse :data:`PROBE_SCRIPT`'s output (pure, tested with canned text)."""
    facts = HostFacts()
    section = ""
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("@"):
            section = line[1:]
            continue
        if not line:
            continue
        parts = line.split()
        if section == "cgroups" and not line.startswith("#") and len(parts) >= 4:
            facts.cgroups[parts[0]] = (int(parts[1]), parts[3] == "1")
        elif section == "apparmor":
            facts.apparmor = line
        elif section == "caplast" and line.isdigit():
            facts.cap_last = int(line)
        elif section == "mountinfo" and " - " in line:
            before, _, after = line.partition(" - ")
            fields = before.split()
            if len(fields) >= 5 and fields[4] == mount:
                facts.volume_fs = after.split()[0]
        elif section == "capbnd" and len(parts) == 2:
            # Agents' inner dockerds show up too (pid: host); their sets are subsets of the
            # engine's, so the union of all is the engine's own.
            facts.bounding[parts[0]] = facts.bounding.get(parts[0], 0) | int(parts[1], 16)
    return facts


def check_docker_host(config: Config, host: DockerHostConfig, backend: Backend | None = None) -> list[Check]:
    """Reachability and images through the backend interface, then the engine's own diagnostics."""
    prefix = f"docker {host.name}"
    backend = backend if backend is not None else DockerHost.from_config(host, timeout=60)
    try:
        backend.ping()
        present, image_checks = _check_images(backend, config, prefix)
        client = docker_client(host.url, host.effective_tls, timeout=60)
    except Exception as exc:  # the SDK's, requests', ssl's or paramiko's: each transport its own
        fix = connection_fix(host.url, host.effective_tls is not None, exc)
        return [Check(f"{prefix} reachable", False, f"{host.url}: {_short(exc)}", fix)]
    finally:
        backend.close()
    try:
        return _check_engine(client, config, host, present, image_checks)
    finally:
        client.close()


def _check_images(backend: Backend, config: Config, prefix: str) -> tuple[list[PoolConfig], list[Check]]:
    """The pools whose image the host has, and a check per pool (a pool it does not take: none)."""
    present: list[PoolConfig] = []
    checks: list[Check] = []
    host = config.host(backend.name)
    for pool in config.pools:
        if host is not None and not host.selected_by(pool.hosts):
            continue
        name = f"{prefix} image {pool.image}"
        try:
            found = backend.image_present(pool.image)
        except ExternalError as exc:
            if exc.kind is ErrorKind.UNREACHABLE:
                raise
            checks.append(Check(name, False, f"pool {pool.name}: {_short(exc.message)}", "check the engine"))
            continue
        others = [h for h in config.docker_hosts if h.name != backend.name and h.selected_by(pool.hosts)]
        if not found and config.image_transfer and (others or pool.image_archive):
            detail = f"pool {pool.name}: image not present on {backend.name} yet; agentpool brings it there "
            detail += "before placing agents (pull, else copy from a host that has it, else image_archive)"
            checks.append(Check(name, True, detail))
            continue
        if not found:
            checks.append(
                Check(
                    name,
                    False,
                    f"pool {pool.name}: image not present on {backend.name}"
                    + ("" if config.image_transfer else " (image_transfer is off)"),
                    f"build or load {pool.image} on {backend.name} (images/build, or docker save | docker load)",
                )
            )
            continue
        present.append(pool)
        checks.append(Check(name, True, f"pool {pool.name}: present"))
    return present, checks


def _check_engine(
    client: docker.DockerClient,
    config: Config,
    host: DockerHostConfig,
    present: list[PoolConfig],
    image_checks: list[Check],
) -> list[Check]:
    prefix = f"docker {host.name}"
    try:
        info = client.info()
        version = client.version().get("Version", "?")
    except (docker.errors.DockerException, requests.RequestException) as exc:
        fix = connection_fix(host.url, host.effective_tls is not None, exc)
        return [Check(f"{prefix} reachable", False, f"{host.url}: {_short(exc)}", fix)]
    checks = [Check(f"{prefix} reachable", True, f"Docker {version} at {host.url}"), *image_checks]

    facts, probe_error = _probe(client, config, present)
    for pool in present:
        checks.append(_check_security(client, config, host, pool, facts))
    checks.append(_check_cgroups(prefix, info, facts, probe_error))
    checks.append(_check_apparmor(prefix, info, facts))
    checks.append(_check_volume_fs(prefix, info, facts, probe_error))
    return checks


def _probe(
    client: docker.DockerClient, config: Config, pools: list[PoolConfig]
) -> tuple[HostFacts | None, str]:
    """Run the probe in the first pool image that can; (facts, "") or (None, why not)."""
    if not pools:
        return None, "no pool image is present on this host to run the probe in"
    error = ""
    for image in dict.fromkeys(p.image for p in pools):
        volume = client.volumes.create(
            name=f"{config.instance}-doctor-{_suffix()}", labels={LABEL_DOCTOR: config.instance}
        )
        container = None
        try:
            container = client.containers.create(
                image,
                entrypoint=["sh", "-c", PROBE_SCRIPT],
                command=[],
                name=f"{config.instance}-doctor-{_suffix()}",
                labels={LABEL_DOCTOR: config.instance},
                pid_mode="host",
                network_mode="none",
                volumes={volume.name: {"bind": PROBE_MOUNT, "mode": "rw"}},
            )
            container.start()
            container.wait(timeout=60)
            output = container.logs(stdout=True, stderr=False).decode(errors="replace")
            if "@end" in output:
                return parse_probe(output), ""
            error = (
                f"the probe in {image} printed no result: {_short(container.logs().decode(errors='replace'))}"
            )
        except (docker.errors.DockerException, requests.RequestException) as exc:
            error = f"the probe in {image} failed: {_short(exc)}"
        finally:
            if container is not None:
                container.remove(force=True)
            volume.remove(force=True)
    return None, error


def _check_security(
    client: docker.DockerClient,
    config: Config,
    host: DockerHostConfig,
    pool: PoolConfig,
    facts: HostFacts | None,
) -> Check:
    name = f"docker {host.name} security {pool.name} ({pool.security})"
    try:
        host_config_kwargs(pool.security, pool.cap_drop)
    except ValueError as exc:
        return Check(name, False, str(exc), "fix the pool's security and cap_drop")
    container = None
    try:
        container = create_container(
            client,
            pool.image,
            pool.security,
            pool.cap_drop,
            entrypoint=["true"],
            command=[],
            name=f"{config.instance}-doctor-{_suffix()}",
            labels={LABEL_DOCTOR: config.instance},
            network_mode="none",
        )
        container.start()
        status = container.wait(timeout=60).get("StatusCode", -1)
    except docker.errors.APIError as exc:
        return _explain_refusal(
            name,
            pool,
            host,
            str(exc.explanation or exc),
            facts,
            accepts=lambda cap: engine_knows_capability(client, pool.image, cap, config.instance),
        )
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return Check(name, False, _short(exc), "check the engine")
    finally:
        if container is not None:
            container.remove(force=True)
    if status != 0:
        return Check(name, False, f"a container with this profile ran `true` and exited {status}", "")
    return Check(name, True, f"a container with {_describe(pool)} starts on {host.name}")


def _describe(pool: PoolConfig) -> str:
    if pool.security == "capabilities":
        drops = ", ".join(pool.cap_drop) or "nothing"
        return f"every capability (minus {drops}), unconfined"
    if pool.security == "sysbox":
        return "the sysbox-runc runtime"
    return "--privileged"


def engine_knows_capability(client: docker.DockerClient, image: str, cap: str, instance: str) -> bool:
    """Whether the engine accepts ``cap`` by name: a container is created with it dropped, never started.

    The kernel may know capabilities the engine does not (Docker 20.10 refuses PERFMON, BPF
    and CHECKPOINT_RESTORE as unknown): advice to drop one of those would make the config fail.
    """
    try:
        container = client.containers.create(
            image,
            entrypoint=["true"],
            command=[],
            cap_drop=[cap],
            network_mode="none",
            name=f"{instance}-doctor-{_suffix()}",
            labels={LABEL_DOCTOR: instance},
        )
    except docker.errors.APIError as exc:
        return "unknown capability" not in str(exc.explanation or exc)
    except (docker.errors.DockerException, requests.RequestException):
        return True  # not an answer about the name: keep the advice as it was
    container.remove(force=True)
    return True


def _explain_refusal(
    name: str,
    pool: PoolConfig,
    host: DockerHostConfig,
    explanation: str,
    facts: HostFacts | None,
    accepts: Callable[[str], bool] = lambda cap: True,
) -> Check:
    detail = f"the engine refused: {_short(explanation)}"
    unknown = re.search(r'unknown capability: "?(?:CAP_)?([A-Z0-9_]+)', explanation)
    if unknown:
        return Check(
            name,
            False,
            detail,
            f"remove {unknown.group(1)} from pool {pool.name}'s cap_drop: the engine on {host.name} "
            "does not know it (and so never grants it)",
        )
    if "unable to apply caps" in explanation:
        bounding = facts.engine_bounding if facts else None
        if bounding is None:
            return Check(
                name,
                False,
                detail + " (the host's capability bounding set could not be read)",
                "compare `grep CapBnd /proc/$(pidof dockerd)/status` on the host with every capability; "
                "use security: capabilities with cap_drop listing the missing ones",
            )
        cap_last = facts.cap_last if facts and facts.cap_last is not None else 40
        # Only names the engine accepts: one it does not know it never grants anyway.
        missing = [c for c in missing_capabilities(bounding, cap_last) if accepts(c)]
        if not missing:
            return Check(
                name,
                False,
                detail + " (the capabilities the host lacks are all unknown to this engine)",
                f"start {pool.image} by hand with this profile on {host.name} to see why",
            )
        dropped = {c.upper().removeprefix("CAP_") for c in pool.cap_drop}
        still = [c for c in missing if c not in dropped] or missing
        listed = ", ".join(still)
        detail += f"; the host's capability bounding set lacks {listed}"
        if pool.security == "privileged":
            return Check(
                name,
                False,
                detail + " and --privileged asks for every capability",
                f"set pool {pool.name} to `security: capabilities` with `cap_drop: [{listed}]`",
            )
        return Check(name, False, detail, f"add them to pool {pool.name}'s cap_drop: [{listed}]")
    if pool.security == "sysbox" and "runtime" in explanation:
        return Check(
            name,
            False,
            detail,
            f"install sysbox on {host.name} (sysbox-runc registered with dockerd), "
            "or use security: capabilities",
        )
    return Check(
        name, False, detail, f"start {pool.image} by hand with this profile on {host.name} to see why"
    )


def _check_cgroups(prefix: str, info: dict[str, object], facts: HostFacts | None, probe_error: str) -> Check:
    name = f"{prefix} cgroup devices"
    if str(info.get("CgroupVersion", "1")) == "2":
        return Check(name, True, "cgroup v2: device access is controlled by eBPF, no hierarchy needed")
    if facts is None or not facts.cgroups:
        return Check(name, False, f"not checked: {probe_error}", "load a pool image on this host first")
    if "devices" not in facts.cgroups:
        return Check(
            name,
            False,
            "the kernel has no devices cgroup controller",
            "use a kernel with CONFIG_CGROUP_DEVICE",
        )
    hierarchy, enabled = facts.cgroups["devices"]
    mount_fix = (
        "mount it on its own hierarchy (mount -t cgroup -o devices cgroup /sys/fs/cgroup/devices), "
        "or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)"
    )
    if not enabled or hierarchy == 0:
        return Check(name, False, "cgroup v1 without a mounted devices controller", mount_fix)
    shared = sorted(s for s, (h, _) in facts.cgroups.items() if h == hierarchy and s != "devices")
    if shared:
        return Check(
            name,
            False,
            f"cgroup v1: devices shares hierarchy {hierarchy} with {', '.join(shared)}",
            mount_fix,
        )
    return Check(name, True, f"cgroup v1, devices on its own hierarchy ({hierarchy})")


def _check_apparmor(prefix: str, info: dict[str, object], facts: HostFacts | None) -> Check:
    name = f"{prefix} apparmor"
    options = info.get("SecurityOptions") or []
    engine = any("name=apparmor" in str(o) for o in options) if isinstance(options, list) else False
    state = facts.apparmor if facts else ("Y" if engine else "unknown")
    if state == "Y":
        used = "the engine confines containers with it" if engine else "the engine does not use it"
        return Check(
            name, True, f"enabled, {used}; agents run unconfined (privileged or apparmor=unconfined)"
        )
    if state == "N":
        return Check(name, True, "present in the kernel, disabled")
    if state == "absent":
        return Check(name, True, "not in the kernel")
    return Check(name, True, f"state {state}")


def _check_volume_fs(
    prefix: str, info: dict[str, object], facts: HostFacts | None, probe_error: str
) -> Check:
    name = f"{prefix} volume filesystem"
    root = str(info.get("DockerRootDir", "/var/lib/docker"))
    fs = facts.volume_fs if facts else None
    source = "a probe volume"
    if fs is None:
        status = info.get("DriverStatus") or []
        backing = [v for k, v in status if k == "Backing Filesystem"] if isinstance(status, list) else []
        fs = str(backing[0]) if backing else None
        source = "the engine's storage driver"
    if fs is None:
        return Check(
            name, False, f"not checked: {probe_error or 'unknown'}", "load a pool image on this host first"
        )
    if fs.lower() in OVERLAY_FILESYSTEMS or fs.lower().startswith("overlay"):
        return Check(
            name,
            False,
            f"volumes land on {fs} ({root}, seen by {source}): the agents' inner overlay2 cannot stack on it",
            'move Docker\'s data-root (daemon.json "data-root") to ext4 or xfs',
        )
    return Check(name, True, f"volumes land on {fs} ({root}): the inner overlay2 can use it")
