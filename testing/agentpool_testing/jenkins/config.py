"""Job ``config.xml`` as python-jenkins' ``create_job`` posts it, and the Pipeline subset.

End-to-end tests create demand the way users do: a freestyle ``<project>`` with
``<assignedNode>`` and shell builders, or a Pipeline ``<flow-definition>`` whose scripted
``node('label') { sh '…' }`` blocks queue ``$PlaceholderTask`` items. Only what those
tests need is understood; anything else in the XML is kept verbatim and ignored.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

FREESTYLE = "hudson.model.FreeStyleProject"
WORKFLOW_JOB = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
CPS_DEFINITION = "org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition"


class ConfigError(ValueError):
    """A config.xml this controller cannot load (Jenkins answers these with an error too)."""


@dataclass
class JobConfig:
    """What the controller needs from a job's config.xml."""

    kind: str  # FREESTYLE or WORKFLOW_JOB
    xml: str
    description: str = ""
    assigned_node: str | None = None
    can_roam: bool = True
    quiet_period: int | None = None
    concurrent: bool = False
    disabled: bool = False
    shells: list[str] = field(default_factory=list)
    script: str = ""


def _text(root: ET.Element, path: str) -> str | None:
    node = root.find(path)
    return None if node is None else (node.text or "")


def _bool(value: str | None, default: bool) -> bool:
    return default if value is None else value.strip() == "true"


def parse_job_config(xml: str) -> JobConfig:
    """Read a freestyle ``<project>`` or a Pipeline ``<flow-definition>``."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - config.xml comes from the test's own client
    except ET.ParseError as exc:
        raise ConfigError(f"config.xml is not well-formed XML: {exc}") from None
    if root.tag == "project":
        config = JobConfig(kind=FREESTYLE, xml=xml)
        config.assigned_node = _text(root, "assignedNode")
        config.can_roam = _bool(_text(root, "canRoam"), default=config.assigned_node is None)
        config.concurrent = _bool(_text(root, "concurrentBuild"), default=False)
        for shell in root.iter("hudson.tasks.Shell"):
            config.shells.append(_text(shell, "command") or "")
    elif root.tag == "flow-definition":
        config = JobConfig(kind=WORKFLOW_JOB, xml=xml, concurrent=True)
        definition = root.find("definition")
        if definition is None or definition.get("class") != CPS_DEFINITION:
            raise ConfigError(f'only an inline <definition class="{CPS_DEFINITION}"> script is supported')
        config.script = _text(definition, "script") or ""
    else:
        raise ConfigError(f"unsupported job type <{root.tag}>: only <project> and <flow-definition>")
    config.description = _text(root, "description") or ""
    config.disabled = _bool(_text(root, "disabled"), default=False)
    quiet = _text(root, "quietPeriod")
    if quiet is not None and quiet.strip():
        try:
            config.quiet_period = int(quiet)
        except ValueError:
            raise ConfigError(f"<quietPeriod> is not a number: {quiet!r}") from None
    return config


# --- the scripted-Pipeline subset -------------------------------------------------------


class PipelineSyntaxError(ValueError):
    """The script uses Groovy outside the supported subset (or is malformed)."""


@dataclass(frozen=True)
class Sh:
    script: str


@dataclass(frozen=True)
class Echo:
    text: str


@dataclass(frozen=True)
class Stage:
    name: str
    body: list[Statement]


@dataclass(frozen=True)
class Node:
    label: str | None
    body: list[Statement]


Statement = Sh | Echo | Stage | Node

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(){}:;,])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "$": "$", "\n": ""}


def _unquote(token: str) -> str:
    triple = token[:3] in ("'''", '"""')
    body = token[3:-3] if triple else token[1:-1]
    double = token[0] == '"'
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
            continue
        if double and c == "$":
            raise PipelineSyntaxError("GString interpolation ($…) is not supported; escape it as \\$")
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(script: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(script):
        m = _TOKEN.match(script, pos)
        if m is None:
            line = script.count("\n", 0, pos) + 1
            snippet = script[pos : pos + 20]
            raise PipelineSyntaxError(f"unsupported Pipeline syntax at line {line}: {snippet!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


class _PipelineParser:
    def __init__(self, script: str) -> None:
        self.tokens = _tokens(script)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, what: str) -> str:
        token = self.peek()
        if token is None or (token[1] != what and token[0] != what):
            found = "end of script" if token is None else repr(token[1])
            raise PipelineSyntaxError(f"expected {what!r}, found {found}")
        self.pos += 1
        return token[1]

    def string_arg(self, optional: bool = False) -> str | None:
        """``'x'``, ``('x')``, ``()`` (when optional) or nothing (when optional)."""
        token = self.peek()
        if token is not None and token[0] == "str":
            self.pos += 1
            return _unquote(token[1])
        if token is not None and token[1] == "(":
            self.pos += 1
            if optional and self.peek() == ("punct", ")"):
                self.pos += 1
                return None
            value = _unquote(self.take("str"))
            self.take(")")
            return value
        if optional:
            return None
        raise PipelineSyntaxError("expected a string argument")

    def block(self, top: bool = False) -> list[Statement]:
        body: list[Statement] = []
        while True:
            token = self.peek()
            if token is None:
                if top:
                    return body
                raise PipelineSyntaxError("missing '}'")
            if token == ("punct", "}") and not top:
                self.pos += 1
                return body
            if token == ("punct", ";"):
                self.pos += 1
                continue
            body.append(self.statement())

    def statement(self) -> Statement:
        token = self.peek()
        if token is not None and token[0] != "ident":
            raise PipelineSyntaxError(f"unexpected {token[1]!r}: expected node, stage, sh or echo")
        word = self.take("ident")
        if word == "node":
            label = self.string_arg(optional=True)
            self.take("{")
            return Node(label or None, self.block())
        if word == "stage":
            name = self.string_arg()
            self.take("{")
            return Stage(name or "", self.block())
        if word == "sh":
            return Sh(self.string_arg() or "")
        if word == "echo":
            return Echo(self.string_arg() or "")
        raise PipelineSyntaxError(
            f"unsupported step {word!r}: this controller runs only node, stage, sh and echo"
        )


def parse_pipeline(script: str) -> list[Statement]:
    """Parse the supported scripted-Pipeline subset; raise :class:`PipelineSyntaxError`."""
    return _PipelineParser(script).block(top=True)


# --- config.xml documents for tests -----------------------------------------------------


def freestyle_config(
    label: str | None,
    command: str = "echo hello",
    *,
    quiet_period: int | None = None,
    concurrent: bool = False,
) -> str:
    """A freestyle ``config.xml`` as Jenkins saves it: one shell step, tied to ``label``."""
    node = (
        f"<assignedNode>{escape(label)}</assignedNode><canRoam>false</canRoam>"
        if label is not None
        else "<canRoam>true</canRoam>"
    )
    quiet = f"<quietPeriod>{quiet_period}</quietPeriod>" if quiet_period is not None else ""
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n<project><actions/><description/>"
        "<keepDependencies>false</keepDependencies><properties/><scm class='hudson.scm.NullSCM'/>"
        f"{node}{quiet}<disabled>false</disabled>"
        "<blockBuildWhenDownstreamBuilding>false</blockBuildWhenDownstreamBuilding>"
        "<blockBuildWhenUpstreamBuilding>false</blockBuildWhenUpstreamBuilding><triggers/>"
        f"<concurrentBuild>{str(concurrent).lower()}</concurrentBuild>"
        f"<builders><hudson.tasks.Shell><command>{escape(command)}</command></hudson.tasks.Shell></builders>"
        "<publishers/><buildWrappers/></project>"
    )


def pipeline_config(script: str, *, quiet_period: int | None = None) -> str:
    """A Pipeline job ``config.xml`` with an inline scripted-Pipeline ``script``."""
    quiet = f"<quietPeriod>{quiet_period}</quietPeriod>" if quiet_period is not None else ""
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n<flow-definition plugin='workflow-job'><actions/>"
        f"<description/><keepDependencies>false</keepDependencies><properties/>{quiet}"
        f"<definition class='{CPS_DEFINITION}' plugin='workflow-cps'>"
        f"<script>{escape(script)}</script><sandbox>true</sandbox></definition>"
        "<triggers/><disabled>false</disabled></flow-definition>"
    )
