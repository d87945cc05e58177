"""Job definitions (config.xml) for the controller: freestyle and scripted-Pipeline jobs that run a
shell script on an agent matching a label expression. Shared by the demo, tests and benchmarks."""

from __future__ import annotations

from xml.sax.saxutils import escape


def freestyle_xml(label: str, script: str, quiet_period: int = 0) -> str:
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n<project><description/>"
        "<keepDependencies>false</keepDependencies><properties/><scm class='hudson.scm.NullSCM'/>"
        f"<assignedNode>{escape(label)}</assignedNode><canRoam>false</canRoam><disabled>false</disabled>"
        f"<quietPeriod>{quiet_period}</quietPeriod><triggers/><concurrentBuild>false</concurrentBuild>"
        f"<builders><hudson.tasks.Shell><command>{escape(script)}</command></hudson.tasks.Shell></builders>"
        "<publishers/><buildWrappers/></project>"
    )


def pipeline_xml(label: str, script: str) -> str:
    body = f"node('{label}') {{\n  sh '''{script}'''\n}}\n"
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n<flow-definition plugin='workflow-job'><description/>"
        "<definition class='org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition' plugin='workflow-cps'>"
        f"<script>{escape(body)}</script><sandbox>true</sandbox></definition><disabled>false</disabled>"
        "</flow-definition>"
    )
