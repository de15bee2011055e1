"""TensorRT: the parts that need no GPU (sidecar, mismatch checks, fp16 graph conversion,
skip logic, the MLflow model's logging), mypy against tensorrt-stubs, and, where TensorRT
and CUDA exist, real engine builds with their parity gates."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch

from export import tensorrt_flavor
from export.engine_sidecar import (
    EngineSidecar,
    PlatformInfo,
    read_sidecar,
    sidecar_path_for,
    validate_sidecar,
    write_engine_files,
)
from export.errors import EngineMismatchError, ExportError, TensorRTUnavailableError
from export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_session
from export.parity import PARITY_GATES, batched_logits, compare_logits, reference_logits
from export.tensorrt_engine import build_engine, check_engine_parity, fp16_onnx
from export.tensorrt_runtime import TensorRTRunner, require_tensorrt, tensorrt_status
from export.tensorrt_served import ServedTensorRT
from tests.conftest import REPO
from tests.test_export_support import CLASS_NAMES, RESOLUTION, trained_digits

HERE = PlatformInfo("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0", "12.8")
KNOWN_REASONS = ("tensorrt not importable", "no CUDA device", "is not supported")


def _sidecar(plan_bytes: bytes, platform: PlatformInfo = HERE) -> EngineSidecar:
    return EngineSidecar(
        tensorrt_version=platform.tensorrt_version,
        gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability,
        cuda_version=platform.cuda_version,
        precision="fp16",
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        resolution=RESOLUTION,
        min_shape=(1, 3, RESOLUTION, RESOLUTION),
        opt_shape=(8, 3, RESOLUTION, RESOLUTION),
        max_shape=(32, 3, RESOLUTION, RESOLUTION),
        plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
    )


@pytest.fixture
def engine_files(tmp_path):
    """Plan bytes written as they would be by build_engine (no header), with a sidecar."""
    plan_bytes = bytes(range(256)) * 8
    return write_engine_files(plan_bytes, tmp_path / "net.fp16.plan", _sidecar(plan_bytes))


def test_plan_is_written_verbatim_and_sidecar_round_trips(engine_files) -> None:
    assert engine_files.plan.read_bytes() == bytes(range(256)) * 8  # header-free
    assert engine_files.sidecar == sidecar_path_for(engine_files.plan)
    sidecar = read_sidecar(engine_files.plan)
    assert sidecar == _sidecar(engine_files.plan.read_bytes())
    assert sidecar.platform == HERE
    validate_sidecar(engine_files.plan, sidecar, HERE)  # same platform: accepted


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("tensorrt_version", "11.0.0.1", "TensorRT 10.13.0.35, this machine has 11.0.0.1"),
     ("compute_capability", "8.6", "compute capability 8.6")],
)  # fmt: skip
def test_other_tensorrt_or_gpu_architecture_is_refused(engine_files, field, value, match) -> None:
    elsewhere = replace(HERE, **{field: value})
    with pytest.raises(EngineMismatchError, match=re.escape(match)):
        validate_sidecar(engine_files.plan, read_sidecar(engine_files.plan), elsewhere)


def test_same_architecture_other_gpu_name_only_warns(engine_files, caplog) -> None:
    other = replace(HERE, gpu_name="NVIDIA H200")
    with caplog.at_level(logging.WARNING, logger="export.engine_sidecar"):
        validate_sidecar(engine_files.plan, read_sidecar(engine_files.plan), other)
    assert "NVIDIA H200" in caplog.text


def test_changed_plan_file_is_refused(engine_files) -> None:
    data = bytearray(engine_files.plan.read_bytes())
    data[100] ^= 0xFF
    engine_files.plan.write_bytes(bytes(data))
    with pytest.raises(EngineMismatchError, match="changed after it was built"):
        validate_sidecar(engine_files.plan, read_sidecar(engine_files.plan), HERE)


def test_missing_or_foreign_sidecar_is_refused(engine_files) -> None:
    text = engine_files.sidecar.read_text()
    engine_files.sidecar.write_text(text.replace('"schema_version": 1', '"schema_version": 7'))
    with pytest.raises(EngineMismatchError, match="schema-1 sidecar"):
        read_sidecar(engine_files.plan)
    engine_files.sidecar.unlink()
    with pytest.raises(EngineMismatchError, match="does not exist"):
        read_sidecar(engine_files.plan)


def test_sidecar_digest_must_match_the_plan_bytes(tmp_path) -> None:
    with pytest.raises(EngineMismatchError, match="sha256"):
        write_engine_files(b"plan", tmp_path / "x.plan", _sidecar(b"other"))


def test_fp16_graph_keeps_fp32_io_and_passes_the_fp16_gate(tmp_path) -> None:
    trained = trained_digits()
    fp32 = export_onnx(trained.model, resolution=RESOLUTION, path=tmp_path / "net.onnx")
    half = fp16_onnx(fp32, tmp_path / "net.fp16.onnx")
    graph = onnx.load(str(half)).graph
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)] == [float32] * 2
    conv_weights = [t for t in graph.initializer if len(t.dims) == 4]
    assert conv_weights and all(t.data_type == float16 for t in conv_weights)
    session = onnx_session(half, ["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    reference = reference_logits(trained.model, trained.val_images, batch_size=64)
    candidate = batched_logits(run, trained.val_images, batch_size=64)
    assert candidate.dtype == np.float32
    report = compare_logits(reference, candidate, **vars(PARITY_GATES["fp16"]))
    assert report.passed, report
    assert 0 < report.max_abs_diff < 0.1  # half precision moved the logits, but not by much


def test_skip_logic_gives_a_reason_and_refuses_clearly(tmp_path, engine_files) -> None:
    available, reason = tensorrt_status()
    if available:
        pytest.skip(f"TensorRT is usable here ({reason}): the refusal path cannot be exercised")
    assert any(known in reason for known in KNOWN_REASONS), reason
    with pytest.raises(TensorRTUnavailableError, match=re.escape(reason)):
        require_tensorrt()
    with pytest.raises(TensorRTUnavailableError, match="drop tensorrt from formats"):
        build_engine(tmp_path / "none.onnx", tmp_path, precision="fp32", resolution=RESOLUTION)
    with pytest.raises(TensorRTUnavailableError):
        TensorRTRunner(engine_files.plan)


@pytest.mark.parametrize(
    ("precision", "batch_range"), [("int8", (1, 8, 32)), ("fp32", (8, 1, 32)), ("fp16", (0, 1, 2))]
)
def test_bad_build_request_is_refused_before_tensorrt_is_needed(
    tmp_path, precision, batch_range
) -> None:
    with pytest.raises(ExportError, match="precision|batch range"):
        build_engine(
            tmp_path / "x.onnx", tmp_path, precision=precision, batch_range=batch_range,
            resolution=RESOLUTION,
        )  # fmt: skip


def test_tensorrt_model_logs_files_flavor_signature_and_requirements(mlflow_store, engine_files):
    """Logging needs no GPU (no input example); loading here refuses with the reason."""
    with mlflow.start_run():
        info = tensorrt_flavor.log_model(
            engine_files, name="engine", class_names=CLASS_NAMES, resolution=RESOLUTION
        )
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, 32, 32)
    assert info.signature.outputs.to_dict()[0]["name"] == OUTPUT_NAME
    assert info.saved_input_example_info is None
    assert info.metadata["class_names"] == CLASS_NAMES and info.metadata["format"] == "tensorrt"
    assert (
        info.metadata["tensorrt_version"] == "10.13.0.35" and info.metadata["precision"] == "fp16"
    )
    flavor = info.flavors[tensorrt_flavor.FLAVOR_NAME]
    assert flavor["tensorrt_version"] == "10.13.0.35" and flavor["compute_capability"] == "9.0"
    assert info.flavors["python_function"]["loader_module"] == tensorrt_flavor.LOADER_MODULE
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert (local / flavor["plan"]).read_bytes() == engine_files.plan.read_bytes()
    assert (local / flavor["sidecar"]).read_text() == engine_files.sidecar.read_text()
    requirements = (local / "requirements.txt").read_text().split()
    assert "tensorrt==10.13.0.35" in requirements
    assert requirements == tensorrt_flavor.get_default_pip_requirements("10.13.0.35")
    if not tensorrt_status()[0]:
        with pytest.raises(TensorRTUnavailableError):
            mlflow.pyfunc.load_model(info.model_uri)
        with pytest.raises(TensorRTUnavailableError):
            tensorrt_flavor.load_model(info.model_uri)


@pytest.mark.e2e
def test_mypy_against_tensorrt_stubs(tmp_path) -> None:
    """tensorrt-stubs 10.x ship .pyi files that do not parse (parameters named ``in``, a
    required parameter after defaults) and no py.typed marker, so a plain mypy run treats
    TensorRT as Any. Copy them with those two defects mended and check against them."""
    site = Path(onnx.__file__).resolve().parents[1]
    if not (site / "tensorrt_bindings" / "tensorrt.pyi").is_file():
        pytest.skip("tensorrt-stubs not installed: pip install --no-deps tensorrt-stubs")
    stubs = tmp_path / "stubs"
    for package in ("tensorrt", "tensorrt_bindings"):
        for source in (site / package).glob("*.pyi"):
            target = stubs / package / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(map(_mend_def, source.read_text().splitlines())))
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\npython_version = 3.11\nfollow_imports = silent\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\nignore_errors = true\n"
        "[mypy-tensorrt_libs,onnxconverter_common.*,cuda,cuda.*]\nignore_missing_imports = true\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
         str(REPO / ".mypy_cache" / "tensorrt-stubs"), "export/tensorrt_engine.py",
         "export/tensorrt_runtime.py", "export/tensorrt_served.py", "export/tensorrt_flavor.py",
         "export/shipped_code.py", "export/engine_sidecar.py", "export/format_builders.py"],
        cwd=REPO, env={"MYPYPATH": str(stubs), "PATH": ""}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]


def _mend_def(line: str) -> str:
    """Rename parameters called ``in`` and give defaults to required ones after defaults."""
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not match:
        return line
    params, depth, current = [], 0, ""
    for char in match.group(2):
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth == 0:
            params.append(current)
            current = ""
        else:
            current += char
    params.append(current)
    seen_default, mended = False, []
    for param in params:
        param = re.sub(r"^(\s*)in:", r"\1in_:", param)
        if "=" in param:
            seen_default = True
        elif seen_default and param.strip() and not param.strip().startswith("*"):
            param += " = ..."
        mended.append(param)
    return match.group(1) + ",".join(mended) + match.group(3)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_runs_and_passes_its_gate(tmp_path, precision) -> None:
    available, reason = tensorrt_status()
    if not available:
        pytest.skip(f"TensorRT engine build needs TensorRT and CUDA: {reason}")
    trained = trained_digits()
    path = export_onnx(trained.model, resolution=RESOLUTION, path=tmp_path / "net.onnx")
    cache = tmp_path / "timing.cache"
    files = build_engine(
        path, tmp_path, precision=precision, resolution=RESOLUTION, batch_range=(1, 8, 64),
        workspace_mb=256, timing_cache_path=cache,
    )  # fmt: skip
    assert cache.is_file() and files.plan.is_file()
    runner = TensorRTRunner(files.plan)
    report = check_engine_parity(trained.model, runner, trained.val_images, strict=True)
    assert report.passed and report.n_images == len(trained.val_images)
    assert runner(torch.rand(1, 3, RESOLUTION, RESOLUTION).numpy()).shape == (1, 10)


class _StandInRunner:
    """A CPU stand-in with a TensorRT execution context's shape: a call binds its input (as
    set_input_shape and set_tensor_address do), the "GPU" runs for a moment, and execution
    reads whatever is bound then. Counts how many calls overlap."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.bound: np.ndarray | None = None
        self.in_flight = self.most = 0
        self._count = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._count:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            self.bound = images
            time.sleep(0.002)
            with torch.no_grad():
                return self.model(torch.from_numpy(self.bound)).numpy()
        finally:
            with self._count:
                self.in_flight -= 1


def test_concurrent_requests_of_different_batch_sizes_get_their_own_rows() -> None:
    from export.flavors import OUTPUT_KEY

    trained = trained_digits()
    runner = _StandInRunner(trained.model)
    pyfunc = ServedTensorRT(runner, CLASS_NAMES, RESOLUTION)
    images = trained.val_images.numpy()
    requests = [images[i : i + size] for i, size in enumerate([1, 3, 8, 17] * 10)]

    def ask(batch: np.ndarray) -> np.ndarray:
        return pyfunc.predict({INPUT_NAME: batch})[OUTPUT_KEY]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, requests))
    with torch.no_grad():
        expected = [trained.model(torch.from_numpy(batch)).numpy() for batch in requests]
    assert runner.most == 1  # one request at a time on the context
    for answer, wanted in zip(answers, expected, strict=True):
        np.testing.assert_allclose(answer, wanted, atol=1e-5)
