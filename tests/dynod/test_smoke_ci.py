"""The GitHub Actions example of README.md ("`dynod smoke`") is fixtures/ci/github-actions.yml:
it parses, installs dynod from its repository, and its smoke step, run for real on a checkout of
fixtures/sample, passes and writes the JUnit report the next step shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dynod.smoke_helpers import APPS, Scene, junit_cases, scene
from tests.helpers import ROOT

WORKFLOW = ROOT / "fixtures" / "ci" / "github-actions.yml"


@pytest.fixture
def place() -> Iterator[Scene]:
    yield from scene()


def _steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert set(workflow) >= {"name", "jobs"} and True in workflow  # YAML 1.1 reads `on` as True
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def test_the_readme_shows_this_very_workflow() -> None:
    body = "".join(line for line in WORKFLOW.read_text().splitlines(True) if line[:1] != "#")
    assert f"```yaml\n{body}```" in (ROOT / "README.md").read_text()


def test_the_workflow_installs_dynod_and_reports() -> None:
    runs = [step.get("run", "") for step in _steps()]
    assert any(run.startswith("pip install") and "git+https://" in run for run in runs)
    report = next(step for step in _steps() if "report_paths" in step.get("with", {}))
    assert report["if"] == "always()" and report["with"]["report_paths"] == "smoke.xml"


def test_the_smoke_step_passes_on_the_fixture_app(place: Scene, tmp_path: Path) -> None:
    (step,) = [step for step in _steps() if "dynod smoke" in step.get("run", "")]
    checkout = tmp_path / "checkout"
    shutil.copytree(APPS / "sample", checkout)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **place.env(),
        "HOME": str(home),  # the step's `~/.cache/dynod-smoke`
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    # GitHub runs a step's `run` as `bash -e {0}` in the checkout.
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dynod smoke: checkout passed" in done.stdout
    cases = junit_cases(checkout / "smoke.xml")
    assert "GET / -> 200" in cases and cases["GET / -> 200"].find("failure") is None
    assert (home / ".cache" / "dynod-smoke").is_dir()
    assert not place.left_behind()
