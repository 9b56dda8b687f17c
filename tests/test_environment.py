"""pyproject.toml and environment.yml must pin the same packages at the same versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", requirement.strip())
        assert match, f"not an exact pin: {requirement!r}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_pyproject_and_environment_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert conda_python == ["python=3.11"]
    assert _pins(declared) == _pins([r for r in pip_section if r != "-e ."])


def test_torch_pins_are_the_local_wheels():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.14.1" in project["dependencies"]
    assert "torchvision==0.29.1" in project["dependencies"]
