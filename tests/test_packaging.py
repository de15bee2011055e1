"""The environment files and the MLproject agree with their sources of truth."""

from __future__ import annotations

import re
import tomllib

import yaml

from pipeline.params import STEP_PARAMS, mlproject_yaml
from tests.conftest import REPO


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_conda_env_lists_the_same_pins_as_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    conda_pins = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    py_pins = {_name(r): r.replace(" ", "") for r in project["dependencies"]}
    assert conda_pins == py_pins
    python = next(d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.split("=")[1] == project["requires-python"].removeprefix(">=")


def test_mlproject_is_generated_from_the_parameter_table() -> None:
    assert (REPO / "MLproject").read_text() == mlproject_yaml(), "run `make mlproject`"
    spec = yaml.safe_load((REPO / "MLproject").read_text())
    assert spec["conda_env"] == "conda.yaml"
    assert set(spec["entry_points"]) == set(STEP_PARAMS)
    for step, names in STEP_PARAMS.items():
        entry = spec["entry_points"][step]
        assert list(entry["parameters"]) == names
        for name in names:  # every parameter reaches the command
            assert "{" + name + "}" in entry["command"]


def test_console_script_and_packages() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["dha"] == "pipeline.cli:main"
    extras = project["project"]["optional-dependencies"]
    assert {"gpu", "tensorrt", "dev"} <= set(extras)
    assert any(r.startswith("onnxruntime-gpu") for r in extras["gpu"])
