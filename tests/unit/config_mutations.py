"""Valid configs mutated the way a typo or a hostile neighbour would: the fuzz test's and bench's source.

:func:`mutate` takes a ``random.Random`` (hypothesis hands one to the property test, the bench
seeds its own) and returns YAML text derived from :data:`VALID` by one to three mutations:
a value replaced by a hostile snippet, a line inserted, deleted, duplicated or re-indented,
random characters inserted, an alias bomb or deep nesting appended.
"""

from __future__ import annotations

import random

VALID = """\
jenkins:
  url: https://jenkins.example.com/
  user: agentpool
  token: fuzz-inline-token-8c2d41
  agent_url: null
  websocket: true
  timeout: 10s
instance: agentpool
poll_interval: 5s
docker_hosts:
  - name: local
    url: unix:///var/run/docker.sock
    max_agents: 20
pools:
  - name: dind
    labels: [docker, linux]
    image: agentpool/dind-agent:latest
    executors: 1
    min_idle: 0
    max_agents: 10
    idle_timeout: 5m
    launch_timeout: 3m
    one_shot: false
    exclusive: true
    security: capabilities
    cap_drop: [SYS_RESOURCE]
    docker_volume: per-agent
    remote_fs: /home/jenkins/agent
    cpus: 2
    memory: 4g
    env: {HTTP_PROXY: 'http://proxy:3128'}
metrics:
  listen: 127.0.0.1:9464
"""

TOKEN = "fuzz-inline-token-8c2d41"

HOSTILE_VALUES = [
    "!foo x",
    f"!secret {TOKEN}",
    "!!int 'abc'",
    "!!float x",
    "!!binary '%%%'",
    "!!timestamp 2001-02-30",
    "2001-02-30",
    "2001-13-01 25:61:00",
    "9" * 5000,
    "-" + "9" * 4200,
    "9" * 400 + ".5",
    ".inf",
    "-.inf",
    ".nan",
    "1e400",
    "0x1F",
    "0o777",
    "1_000",
    "~",
    "null",
    "[]",
    "{}",
    "[1, [2, [3]]]",
    "{a: 1}",
    '"line\\nbreak"',
    '"nul\\x00byte"',
    '"esc\\x1b[31mred"',
    "''",
    "'  '",
    "1ms",
    "0s",
    "-5",
    "1000000d",
    "99999999999999999999g",
    "1",
    "true",
    "yes",
    "on",
    "&r [*r]",
    "*undefined",
    "{? [a] : b}",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!python/object:os.system ls",
    "'unterminated",
    '"unterminated',
    "[unclosed",
    "{unclosed",
    "https://user:pw@jenkins.example.com/",
    "http://:80/",
    "http://host:99999/",
    "ftp://jenkins/",
    "unix://relative.sock",
    "tcp://h:99999",
    "tcp://u:p@h:2375",
    "foo://x",
    "Agentpool/Bad:@@",
    "img:tag with space",
    "CAP_FAKE",
    "0.0.0.0:99999",
    "[::1]:9464",
    "[::zz]:1",
    ":::",
    "evil host:80",
    '"dind\\n"',
    "UPPER",
    "a" * 300,
    "${UNSET_VAR_FOR_FUZZ}/x",
    "/dev/zero",
    "/etc",
    "relative/token",
    "{PORT: '2375'}",
    "{DIND_INSECURE_TCP: 'true'}",
    "{DOCKERD_OPTS: -H tcp://0.0.0.0:2375}",
    "{JENKINS_SECRET: x}",
    "{A: null}",
    "{A: [1]}",
    "{A: {b: 1}}",
    "{BAD-NAME: x}",
    '{"A\\nB": 1}',
    "{A: .inf}",
    "{A: 1.5, B: false, C: 7}",
    "[docker, docker]",
    "[a b]",
    '["x\\ny"]',
    "[]",
    "[SYS_ADMIN, NOPE]",
    "privileged-ish",
    "reuse",
    "- a\n- b",
]

HOSTILE_LINES = [
    "unknown_key: 1",
    "? [a, b]\n: c",
    "? {a: 1}\n: c",
    '"key\\nfake.yaml:1: x": 1',
    "<<: *nothing",
    "<<: {a: 1}",
    "<<: 3",
    "%YAML 1.1",
    "---",
    "...",
    "\t- tab",
    "- orphan list item",
    "1: 2",
    "null: x",
    "[1]: x",
    "pools: []",
    "jenkins: null",
    "metrics: {listen: 0.0.0.0:80, allowed_hosts: [evil host]}",
    "metrics: {admin_token_file: /dev/zero}",
    "env_files: {TOKEN: /dev/zero}",
]

CHARS = "\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85\u2028\u2029\ufeff\ud7ff\t\n\r :{}[],&*#?|-<>=!%@`'\"\\é中😀"


def alias_bomb(levels: int, width: int) -> str:
    lines = [f"bomb0: &b0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"bomb{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def deep(depth: int, flow: bool) -> str:
    if flow:
        return "deep: " + "[" * depth + "]" * depth + "\n"
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"


def mutate(rnd: random.Random, base: str = VALID) -> str:
    lines = base.splitlines()
    for _ in range(rnd.randint(1, 3)):
        kind = rnd.randrange(9)
        i = rnd.randrange(len(lines)) if lines else 0
        if kind <= 2 and lines:
            line = lines[i]
            key, sep, _ = line.partition(":")
            if sep:
                lines[i] = f"{key}: {rnd.choice(HOSTILE_VALUES)}"
            else:
                lines[i] = rnd.choice(HOSTILE_VALUES)
        elif kind == 3:
            indent = " " * rnd.choice([0, 2, 4, 1, 3])
            lines.insert(i, indent + rnd.choice(HOSTILE_LINES))
        elif kind == 4 and lines:
            del lines[i : i + rnd.randint(1, 3)]
        elif kind == 5 and lines:
            lines.insert(i, lines[i])
        elif kind == 6 and lines:
            lines[i] = " " * rnd.randint(0, 6) + lines[i].lstrip()
        elif kind == 7:
            text = "\n".join(lines)
            at = rnd.randrange(len(text) + 1)
            noise = "".join(rnd.choice(CHARS) for _ in range(rnd.randint(1, 4)))
            lines = (text[:at] + noise + text[at:]).splitlines()
        else:
            extra = (
                alias_bomb(rnd.randint(2, 9), rnd.randint(2, 12))
                if rnd.random() < 0.5
                else deep(rnd.choice([10, 40, 200, 5000]), rnd.random() < 0.5)
            )
            lines.extend(extra.splitlines())
    return "\n".join(lines) + "\n"
