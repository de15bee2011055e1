"""`dha --help` and `dha --version` answer without importing torch or MLflow; no FutureWarning."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
