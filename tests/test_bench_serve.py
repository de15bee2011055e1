"""benchmarks/bench_serve.py against a real `mlflow models serve`, on a small load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from export.flavors import log_onnx_model
from export.onnx_export import export_onnx
from tests.conftest import REPO
from tests.test_export_support import CLASS_NAMES, RESOLUTION, small_convnet


@pytest.mark.e2e
def test_bench_serve_loads_the_served_model(mlflow_store: str, tmp_path: Path) -> None:
    path = export_onnx(small_convnet().eval(), resolution=RESOLUTION, path=tmp_path / "m.onnx")
    with mlflow.start_run():
        info = log_onnx_model(path, name="model", class_names=CLASS_NAMES, resolution=RESOLUTION)
    missing = "models:/dha-not-registered-onnx@champion"
    args = ["--models", info.model_uri, missing, "--requests", "40", "--clients", "4"]
    args += ["--batches", "1", "8", "--log-dir", str(tmp_path / "logs")]
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_serve.py"), *args],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_store},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(info.model_uri)]
    # model, batch, requests, errors, req/s, img/s, p50 ms, p99 ms
    assert [(int(r[1]), int(r[2]), int(r[3])) for r in rows] == [(1, 40, 0), (8, 40, 0)]
    for row in rows:
        rate, images, p50, p99 = map(float, row[4:])
        assert rate > 0 and images == pytest.approx(rate * int(row[1]), rel=1e-2)
        assert 0 < p50 <= p99
    (skipped,) = [line for line in result.stdout.splitlines() if line.startswith(missing)]
    assert "skipped" in skipped and "not found" in skipped
