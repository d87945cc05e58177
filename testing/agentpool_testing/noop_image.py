"""A no-op agent image: a Jenkins inbound agent and nothing else, to measure agentpool's own cost.

The dind image starts a Docker engine in every agent, which costs about a second of CPU per
agent; on a two-core machine a burst of twelve of them measures the machine, not agentpool.
This image is the offline base (Debian with Java and curl) with an entrypoint that fetches
the controller's agent.jar and runs it, reading the environment agentpool gives every agent.
``--sigterm-deaf`` variants ignore SIGTERM, like a build that traps it: their stop takes the
whole grace (``stop_timeout``). Built once per tag on the local engine, never as ``:latest``.
"""

from __future__ import annotations

import io
import tarfile

import docker
import docker.errors

BASE = "agentpool/offline-base:bookworm"
NOOP_IMAGE = "agentpool/noop-agent:concurrent-2"
DEAF_IMAGE = "agentpool/noop-agent:concurrent-2-sigterm-deaf"

ENTRYPOINT = """#!/bin/bash
set -eu
{trap}
jar=/tmp/agent.jar
curl -fsS --retry 5 --retry-delay 1 --retry-all-errors -o "$jar" "${{JENKINS_URL%/}}/jnlpJars/agent.jar"
# a client JVM's start-up (C1 only, serial GC): a dozen agents start at once on two cores
# agentpool hands the secret over as a file (JENKINS_SECRET_FILE); `-secret @FILE` reads it
secret="${{JENKINS_SECRET:-}}"
[ -n "${{JENKINS_SECRET_FILE:-}}" ] && secret="@$JENKINS_SECRET_FILE"
java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData -jar "$jar" -url "$JENKINS_URL" -secret "$secret" -name "$JENKINS_AGENT_NAME" \\
    -webSocket -workDir "${{JENKINS_AGENT_WORKDIR:-/home/jenkins/agent}}" </dev/null &
wait $! || true
while :; do sleep 1; done
"""


def build_noop_image(client: docker.DockerClient, *, sigterm_deaf: bool = False) -> str:
    """Build the image on ``client``'s engine unless it exists; return its tag."""
    tag = DEAF_IMAGE if sigterm_deaf else NOOP_IMAGE
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    # As PID 1 a process has no default action for SIGTERM; the trap keeps it that way
    # explicitly (deaf), or exits at once.
    trap = "trap '' TERM" if sigterm_deaf else "trap 'exit 0' TERM"
    script = ENTRYPOINT.format(trap=trap).encode()
    dockerfile = (
        f'FROM {BASE}\nCOPY entrypoint /entrypoint\nUSER root\nENTRYPOINT ["/entrypoint"]\n'
    ).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in (("Dockerfile", dockerfile, 0o644), ("entrypoint", script, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    return tag
