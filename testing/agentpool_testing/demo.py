"""The README's demo: agentpool against the project's Jenkins-compatible controller and the
local Docker engine, on the config shipped with this package (``demo.yaml``).

It starts the controller, queues a freestyle build and a Pipeline build that both ask for
``docker && linux`` and run ``docker run`` inside their agent, runs agentpool's reconcile
passes, prints what happens (agents provisioned, builds and their output, agents reaped) and
finally checks that no container, volume or node of the demo is left. Exit 0 when all of
that happened.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from importlib import resources
from pathlib import Path

import docker
import jenkins

from agentpool.config import Config, ConfigError, load_config_text
from agentpool.daemon import Engine
from agentpool.logs import setup_logging
from agentpool_testing.artifacts import ArtifactServer
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml, pipeline_xml
from agentpool_testing.network import BridgeGatewayError, bridge_gateway, free_port

DEMO_CONFIG = Path(str(resources.files(__package__ or "agentpool_testing").joinpath("demo.yaml")))
BUSYBOX = "agentpool/busybox:latest"


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


URL_PLACEHOLDER = "${AGENTPOOL_DEMO_URL}"


def load_demo_config(path: str | Path, url: str) -> Config:
    """The demo config at ``path`` with ``${AGENTPOOL_DEMO_URL}`` filled in with ``url``."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}:1: (file): cannot read the config: {exc}"]) from None
    return load_config_text(text.replace(URL_PLACEHOLDER, url), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--config", default=str(DEMO_CONFIG), help=f"demo config ({URL_PLACEHOLDER} is filled in)"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a TextIOWrapper
    setup_logging("kv", "INFO")
    logging.getLogger("agentpool").setLevel(logging.INFO)

    token = secrets.token_hex(16)
    os.environ["AGENTPOOL_DEMO_TOKEN"] = token
    client = docker.from_env()
    try:
        gateway = bridge_gateway(client)
        port = free_port(gateway)
        config = load_demo_config(args.config, f"http://{gateway}:{port}/")
        controller = Controller(listen=f"{gateway}:{port}", user=config.jenkins.user, token=token)
        controller.start()
    except (BridgeGatewayError, ConfigError, OSError, RuntimeError) as exc:
        client.close()
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    say(f"Jenkins-compatible controller at {controller.url} (the bridge gateway: agents reach it there)")
    engine = Engine(config)
    ok = False
    try:
        with ArtifactServer(client, {"busybox": BUSYBOX}, listen=gateway) as artifacts:
            ok = run_demo(
                engine, config.jenkins.url, config.jenkins.user, token, artifacts, client, args.timeout
            )
    finally:
        if not ok:
            clean_up(engine, client)
        engine.close()
        controller.stop()
        client.close()
    return 0 if ok else 1


def run_demo(
    engine: Engine,
    url: str,
    user: str,
    token: str,
    artifacts: ArtifactServer,
    client: docker.DockerClient,
    timeout: float,
) -> bool:
    server = jenkins.Jenkins(url, username=user, password=token, timeout=10)
    script = artifacts.docker_run_script(
        "busybox", BUSYBOX, "sh -c 'echo hello from a container inside $(hostname)'"
    )
    server.create_job("demo-freestyle", freestyle_xml("docker && linux", script))
    server.create_job("demo-pipeline", pipeline_xml("docker && linux", script))
    for job in ("demo-freestyle", "demo-pipeline"):
        server.build_job(job)
        say(f"queued {job} (label docker && linux)")

    jobs = {"demo-freestyle": None, "demo-pipeline": None}
    deadline = time.monotonic() + timeout
    seen_agents: set[str] = set()
    while time.monotonic() < deadline:
        engine.run_pass()
        for name, agent in engine.memory.agents.items():
            if name not in seen_agents:
                seen_agents.add(name)
                say(f"agent {name} provisioned in pool {agent.pool} on host {agent.host}")
        for job, result in jobs.items():
            if result is None:
                try:
                    info = server.get_build_info(job, 1)
                except jenkins.JenkinsException:  # not started yet: python-jenkins' word for 404
                    continue
                if info.get("result"):
                    jobs[job] = info["result"]
                    where = f" on {info['builtOn']}" if info.get("builtOn") else ""
                    say(f"{job} #1 finished: {info['result']}{where}")
                    for line in server.get_build_console_output(job, 1).splitlines():
                        print(f"    | {line}", flush=True)
        if all(jobs.values()) and not engine.memory.agents:
            break
        time.sleep(engine.config.poll_interval)
    label = f"agentpool.instance={engine.config.instance}"
    left = {
        "containers": [c.name for c in client.containers.list(all=True, filters={"label": label})],
        "volumes": [v.name for v in client.volumes.list(filters={"label": label})],
        "nodes": [
            n["name"] for n in server.get_nodes() if n["name"].startswith(engine.config.instance + "-")
        ],
    }
    say(f"agents provisioned: {len(seen_agents)}; reaped: {len(seen_agents) - len(engine.memory.agents)}")
    say(f"left behind: {left}")
    ok = all(r == "SUCCESS" for r in jobs.values()) and not any(left.values())
    say("demo " + ("succeeded" if ok else f"FAILED: results={jobs}"))
    return ok


def clean_up(engine: Engine, client: docker.DockerClient) -> None:
    """After a failed or interrupted demo: drain, then remove whatever of the demo is left."""
    say("cleaning up")
    try:
        engine.set_draining(None, True)
        deadline = time.monotonic() + 30
        while engine.memory.agents and time.monotonic() < deadline:
            engine.run_pass()
            time.sleep(1)
    finally:
        label = f"agentpool.instance={engine.config.instance}"
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"label": label}):
            volume.remove(force=True)


if __name__ == "__main__":
    sys.exit(main())
