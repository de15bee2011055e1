"""`dha --help` and `dha --version` answer without importing torch or MLflow; no FutureWarning."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pipeline.cli import SUBCOMMANDS, build_parser
from tests.conftest import REPO

_PROBE = """
import sys
from pipeline.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "mlflow", "fvcore", "onnx") if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_top_level_imports_nothing_heavy(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert out.strip().splitlines()[-1] == "heavy:", out


def test_version_names_the_package() -> None:
    from importlib.metadata import version

    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"dha {version('dha-pipeline')}"


def test_counting_flops_raises_no_future_warning() -> None:
    """fvcore's import runs torch.jit.script, which torch deprecates: nothing reaches users."""
    code = (
        "import torch; from dha_train.nas.counting import count_flops; "
        "print(count_flops(torch.nn.Conv2d(3, 4, 3), (1, 3, 8, 8)).total)"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FutureWarning" not in result.stderr
    assert int(result.stdout) == 4 * 3 * 9 * 6 * 6  # multiply-adds of the one convolution


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_prints_its_help(command: str) -> None:
    """argparse %-formats help strings: a literal % in a parameter's help (as "5%") once made
    ``dha run --help`` end in a TypeError."""
    _, parsers = build_parser(command)
    text = " ".join(parsers[command].format_help().split())
    shown = [a for a in parsers[command]._actions if a.help != argparse.SUPPRESS]
    flags = [o for a in shown for o in a.option_strings]
    assert flags and all(flag in text for flag in flags)
    if command in ("run", "search-train"):
        assert "moved < 5% over" in text  # the freeze rule's help, % shown once


def test_the_parameter_table_imports_nothing_heavy() -> None:
    """Every dha command's parser reads pipeline.params: it names the latency backends from
    the torch-free table in pipeline.backends, not from pipeline.latency (torch)."""
    code = (
        "import sys; from pipeline.params import PARAMS; from pipeline.backends import "
        "BACKEND_SPECS; assert all(b in PARAMS['backends'].help for b in BACKEND_SPECS); "
        "print(sorted(m for m in ('torch', 'mlflow', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]", out.stdout
