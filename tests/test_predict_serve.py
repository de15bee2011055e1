"""`mlflow models serve -m models:/<name>@champion --env-manager local` answers real images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import mlflow
import numpy as np
import pytest
import torch

from export.champion import eligibility
from export.flavors import OUTPUT_KEY, log_onnx_model
from export.onnx_export import check_onnx_parity, export_onnx
from export.registry import CHAMPION, register_model_version, registered_name
from tests.conftest import free_port, wait_for_http
from tests.test_export_support import CLASS_NAMES, RESOLUTION, trained_digits


@pytest.mark.e2e
def test_scoring_server_answers_posted_images(mlflow_store, tmp_path) -> None:
    trained = trained_digits()
    path = export_onnx(trained.model, resolution=RESOLUTION, path=tmp_path / "digits.onnx")
    check_onnx_parity(trained.model, path, trained.val_images, strict=True)
    with mlflow.start_run():
        info = log_onnx_model(path, name="model", class_names=CLASS_NAMES, resolution=RESOLUTION)
    name = registered_name("tiny", "digits", "onnx")
    val_top1 = 100.0 * trained.val_accuracy
    allowed = eligibility(val_top1=val_top1, num_classes=len(CLASS_NAMES))
    registered = register_model_version(
        info.model_uri, name=name, tags={"val_top1": val_top1, **allowed.tags()}, budgets={}
    )
    port = free_port()
    # the scoring server execs `uvicorn` from PATH: put this interpreter's bin first, as an
    # activated virtual environment would
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", registered.alias_uri(CHAMPION),
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, timeout=120)
        images = trained.val_images[:16]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.numpy().tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    logits = np.asarray(answer["predictions"][OUTPUT_KEY], dtype=np.float32)
    with torch.no_grad():
        expected = trained.model(images).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert (logits.argmax(1) == trained.val_labels[:16].numpy()).mean() > 0.7
