"""`mlflow models serve` for a registered model: the README's request gets its digit back, with
class names, probabilities and logits; a bad request gets an HTTP 400 that says what is wrong
and does not echo the request body."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from dha_train.preprocess import Preprocess
from export.champion import eligibility
from export.flavors import log_onnx_model
from export.onnx_export import check_onnx_parity, export_onnx
from export.registry import CHAMPION, register_model_version, registered_name
from export.serving import OUTPUT_SCHEMA
from tests.conftest import REPO, scoring_server
from tests.test_export_support import CLASS_NAMES, TrainedDigits, trained_digits

pytestmark = pytest.mark.e2e
RESOLUTION = 16  # the default digits resolution, which the README's request file has
MARKER = 8675309.25  # a value no error reply may contain


@dataclass(frozen=True)
class Served:
    url: str
    trained: TrainedDigits


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A trained digits net at 16 px, registered as champion in a SQLite store and served."""
    tmp = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        uri = f"sqlite:///{tmp}/mlflow.db"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        trained = trained_digits(resolution=RESOLUTION)
        path = export_onnx(trained.model, resolution=RESOLUTION, path=tmp / "digits.onnx")
        check_onnx_parity(trained.model, path, trained.val_images, strict=True)
        with mlflow.start_run():
            info = log_onnx_model(
                path, name="model", class_names=CLASS_NAMES, resolution=RESOLUTION,
                input_example=trained.val_images[:1].numpy(),
                preprocess=Preprocess.centre_crop(RESOLUTION, mean=trained.mean, std=trained.std),
            )  # fmt: skip
        val_top1 = 100.0 * trained.val_accuracy
        registered = register_model_version(
            info.model_uri, name=registered_name("tiny", "digits", "onnx"), budgets={},
            tags={"val_top1": val_top1, **eligibility(val_top1=val_top1, num_classes=10).tags()},
        )  # fmt: skip
        with scoring_server(registered.alias_uri(CHAMPION), tmp / "serve.log") as url:
            yield Served(url, trained)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _check_schema(predictions: dict, rows: int) -> None:
    assert set(predictions) == set(OUTPUT_SCHEMA)
    logits = np.asarray(predictions["logits"], dtype=np.float32)
    probabilities = np.asarray(predictions["probabilities"], dtype=np.float32)
    assert logits.shape == probabilities.shape == (rows, len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert predictions["class_names"] == CLASS_NAMES
    assert predictions["label"] == [CLASS_NAMES[i] for i in logits.argmax(axis=1)]


def _readme_curl() -> tuple[dict[str, str], Path]:
    """The headers and the body file of the README's `curl ... /invocations` request."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("curl ") and "invoc" in ln]
    words = shlex.split(line.split("#")[0])
    pairs = list(zip(words, words[1:], strict=False))  # (flag, its value)
    headers = dict(tuple(p.strip() for p in v.split(":", 1)) for w, v in pairs if w == "-H")
    (data,) = [v for w, v in pairs if w in ("-d", "--data", "--data-binary")]
    assert data.startswith("@"), f"the README posts {data!r}, not a file of the repository"
    return headers, REPO / data[1:]


def test_the_readme_request_file_gets_its_digit_back(served: Served) -> None:
    headers, body_file = _readme_curl()
    assert headers == {"Content-Type": "application/json"}
    make = runpy.run_path(str(REPO / "deploy" / "make_request.py"))
    body, label = make["digits_request"]()
    assert body_file.read_text() == body  # the checked-in file is the real image
    status, answer = _post(served.url, body_file.read_bytes(), headers)
    assert status == 200, answer
    _check_schema(answer["predictions"], rows=1)
    assert answer["predictions"]["label"] == [CLASS_NAMES[label]]


def test_scoring_server_answers_posted_images(served: Served) -> None:
    images = served.trained.val_images[:16]
    body = json.dumps({"inputs": images.numpy().tolist()}).encode()
    status, answer = _post(served.url, body, {"Content-Type": "application/json"})
    assert status == 200, answer
    _check_schema(answer["predictions"], rows=16)
    with torch.no_grad():
        expected = served.trained.model(images).numpy()
    np.testing.assert_allclose(answer["predictions"]["logits"], expected, atol=1e-4)
    labels = served.trained.val_labels[:16].numpy()
    assert (np.asarray(answer["predictions"]["logits"]).argmax(1) == labels).mean() > 0.7


def _pixels_0_255() -> str:
    image = np.round(255 * np.random.default_rng(0).random((1, 3, RESOLUTION, RESOLUTION)))
    image[0, 0, 0, 0] = MARKER
    return json.dumps({"inputs": image.tolist()})


def _non_finite(token: str) -> str:
    image = np.full((1, 3, RESOLUTION, RESOLUTION), 0.5)
    image[0, 0, 0, 1] = MARKER
    return json.dumps({"inputs": image.tolist()}).replace("0.5", token, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [(_pixels_0_255(), r"values outside \[0, 1\] \(0-255 pixels\? divide them by 255\)"),
     (_non_finite("NaN"), r"non-finite values \(NaN or infinity\)"),
     (_non_finite("Infinity"), r"non-finite values \(NaN or infinity\)")],
    ids=["0-255", "nan", "infinity"],
)  # fmt: skip
def test_bad_input_gets_a_400_that_does_not_echo_the_request(
    served: Served, body: str, message: str
) -> None:
    assert str(MARKER) in body
    status, answer = _post(served.url, body.encode(), {"Content-Type": "application/json"})
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert re.search(message, answer["message"]), answer["message"]
    assert f"expected float32 images shaped (N, 3, {RESOLUTION}, {RESOLUTION})" in answer["message"]
    reply = json.dumps(answer)
    assert "8675309" not in reply and "8.675" not in reply  # the posted values are not echoed
