"""Parameters are validated once, with one clear line per mistake."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dha_train.errors import ConfigError
from pipeline.cli import main
from pipeline.params import PARAMS, parse_formats


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("dataset", "digits", "digits"),
        ("epochs", "3", 3),
        ("max_flops_m", "", None),
        ("max_flops_m", "12.5", 12.5),
        ("data_dir", "''", ""),
        ("reuse", "false", False),
        ("space", "cell", "cell"),
    ],
)
def test_values_parse(name: str, raw: str, expected: object) -> None:
    assert PARAMS[name].parse(raw) == expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("dataset", "digts", "did you mean 'digits'"),
        ("space", "mobilnet", "did you mean 'mobilenet'"),
        ("epochs", "three", "is not an int"),
        ("batch_size", "1", "below its minimum"),
        ("reuse", "maybe", "not a boolean"),
        ("mode", "foo", "choose one of dha, nas, nas_da, nas_hpo, sequential, sequential_da"),
        ("freeze_rule", "windw", "did you mean 'window'"),
        ("arch_weighting", "L1", "choose one of l1, alpha"),
        ("tau_lr", "-0.1", "below its minimum"),
        ("hyper_lr", "fast", "is not a float"),
    ],
)
def test_bad_values_say_what_is_wrong(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PARAMS[name].parse(raw)


def test_formats() -> None:
    assert parse_formats("onnx, tensorrt") == ("onnx", "tensorrt")
    with pytest.raises(ConfigError, match="did you mean 'onnx'"):
        parse_formats("onx")


def test_misspelt_flag_is_one_line_with_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--datset", "digits"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean --dataset" in err[0]


def test_help_lists_every_step() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in (
        "run",
        "search-train",
        "measure",
        "export",
        "register",
        "compare",
        "predict",
        "benchmark",
        "profile",
    ):
        assert command in out


def test_mode_choices_come_from_the_modes_registry() -> None:
    from dha_train.modes import MODES

    assert PARAMS["mode"].choices == tuple(MODES)
    assert {"sequential_da", "sequential_hpo"} <= set(MODES)


def test_inconsistent_search_bounds_fail_before_any_run(
    mlflow_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    assert main(["run", "--lr-max", "0.01", "--references", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "initial lr=0.025 lies outside its bounds" in err[-1], err
    assert mlflow.search_runs(search_all_experiments=True).empty
