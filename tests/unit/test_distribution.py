"""``pip install .`` of agentpool installs neither the test controller nor aiohttp.

The Jenkins-compatible controller, the demo and the test helpers are the separate
``agentpool-testing`` distribution (``testing/``); this builds agentpool's wheel from a copy
of the sources and reads what it would install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_agentpool_wheel_ships_no_test_controller_and_needs_no_aiohttp(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "agentpool", source / "agentpool", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "Deprecat" not in built.stderr and "BuildBackendWarning" not in built.stderr, built.stderr
    [wheel] = (tmp_path / "dist").glob("agentpool-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = zf.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"agentpool"}
    assert not [n for n in names if "testing" in n or n.endswith((".java", ".jar", "demo.py", "demo.yaml"))]
    requires = [h for h in headers if h.startswith("Requires-Dist:")]
    assert any("python-jenkins" in r for r in requires)
    assert not [r for r in requires if "aiohttp" in r.lower()]
    assert "License-Expression: MIT" in headers
