"""Jobs that run a shell script on an agent matching a label expression, for the demo, the tests
and the benchmarks: thin wrappers over the controller's config.xml builders with no quiet period
(Jenkins' default of 5 s only slows a test down)."""

from __future__ import annotations

from agentpool_testing.jenkins import freestyle_config, pipeline_config


def freestyle_xml(label: str, script: str) -> str:
    return freestyle_config(label, script, quiet_period=0)


def pipeline_xml(label: str, script: str) -> str:
    body = script.replace("\\", "\\\\").replace("'''", "\\'\\'\\'")
    return pipeline_config(f"node('{label}') {{\n  sh '''{body}'''\n}}\n", quiet_period=0)
