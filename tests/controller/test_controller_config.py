"""config.xml reading and the scripted-Pipeline subset."""

from __future__ import annotations

import pytest

from agentpool_testing.jenkins import freestyle_config, pipeline_config
from agentpool_testing.jenkins.config import (
    FREESTYLE,
    WORKFLOW_JOB,
    ConfigError,
    Echo,
    Node,
    PipelineSyntaxError,
    Sh,
    Stage,
    parse_job_config,
    parse_pipeline,
)


def test_freestyle_config() -> None:
    config = parse_job_config(freestyle_config("docker && linux", "make\nmake test", quiet_period=3))
    assert config.kind == FREESTYLE
    assert (config.assigned_node, config.can_roam, config.quiet_period) == ("docker && linux", False, 3)
    assert config.shells == ["make\nmake test"]
    roaming = parse_job_config(freestyle_config(None))
    assert roaming.can_roam is True and roaming.quiet_period is None


def test_pipeline_config() -> None:
    config = parse_job_config(pipeline_config("node { sh 'true' }", quiet_period=0))
    assert config.kind == WORKFLOW_JOB and config.script == "node { sh 'true' }" and config.quiet_period == 0


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<project>", "not well-formed"),
        ("<matrix-project/>", "unsupported job type <matrix-project>"),
        ("<flow-definition><definition class='x'/></flow-definition>", "CpsFlowDefinition"),
        ("<project><quietPeriod>soon</quietPeriod></project>", "<quietPeriod> is not a number"),
    ],
)
def test_bad_configs_name_the_cause(xml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_job_config(xml)


def test_pipeline_subset() -> None:
    script = """
    // build it
    stage('Build') {
        node('docker && linux') {
            sh '''echo "a b"'''
            sh("make")
        }
    }
    /* then */ node() { echo "done \\$HOME"; sh \"\"\"ls\"\"\" }
    node { }
    """
    assert parse_pipeline(script) == [
        Stage("Build", [Node("docker && linux", [Sh('echo "a b"'), Sh("make")])]),
        Node(None, [Echo("done $HOME"), Sh("ls")]),
        Node(None, []),
    ]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("node('x') { bat 'dir' }", "unsupported step 'bat'"),
        ('node { sh "echo ${env.X}" }', "interpolation"),
        ("node('x') { sh 'a' ", "missing '}'"),
        ("pipeline { agent any }", "unsupported step 'pipeline'"),
        ("node('x') { sh 'a' } }", "unexpected '}': expected node, stage, sh or echo"),
    ],
)
def test_pipeline_outside_the_subset_is_refused(script: str, message: str) -> None:
    with pytest.raises(PipelineSyntaxError, match=message):
        parse_pipeline(script)
