"""The latency budget's runtimes and table: what times an entry, and where it is cached.

Real parts only: ONNX Runtime sessions on real exports, real eager torch, files on disk.
No timing is asserted (the machine is shared); what is asserted is which program ran, with
which settings, and which cache entries exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dha_train.errors import ConfigError
from dha_train.nas.latency_runtimes import (
    LATENCY_RUNTIMES,
    RuntimeUnavailable,
    deployment_runtime,
    latency_runtime,
    ort_session,
    time_calls,
)
from dha_train.nas.latency_table import LatencyTable, fit_calibration, table_file_name
from dha_train.tensorrt_import import import_tensorrt
from export.runtime_report import onnx_predictor

CPU = torch.device("cpu")
SHAPE = (1, 4, 8, 8)


def _module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()).eval()


def _usable(name: str, device: torch.device = CPU) -> None:
    try:
        LATENCY_RUNTIMES[name].check(device)
    except RuntimeUnavailable as exc:
        pytest.skip(f"latency runtime {name} unavailable here: {exc}")


@pytest.mark.parametrize("name", sorted(LATENCY_RUNTIMES))
def test_every_runtime_runs_the_module_it_times(name: str, tmp_path: Path) -> None:
    device = torch.device("cuda") if name == "tensorrt" else CPU
    _usable(name, device)
    runtime = LATENCY_RUNTIMES[name]
    module = _module()
    call = runtime.prepare(module, SHAPE, device, tmp_path)
    out = call()
    first = out[0] if isinstance(out, list) else out  # ORT returns [logits], TRT its buffers
    got = torch.as_tensor(np.asarray(first.cpu() if torch.is_tensor(first) else first))
    with torch.no_grad():
        want = module(torch.zeros(SHAPE))
    assert torch.allclose(got.reshape(want.shape), want, atol=1e-5)
    ms = time_calls(runtime, {"m": call}, device, seconds=0.03)["m"]
    assert np.isfinite(ms) and ms > 0
    assert runtime.version()


def test_onnxruntime_entry_is_an_onnx_runtime_session_on_an_export(tmp_path: Path) -> None:
    out = LATENCY_RUNTIMES["onnxruntime"].prepare(_module(), SHAPE, CPU, tmp_path)()
    assert isinstance(out, list) and isinstance(out[0], np.ndarray)  # ORT's output, not torch's
    assert list(tmp_path.glob("*.onnx"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, on purpose
def test_ort_session_uses_the_settings_the_deployed_model_is_measured_with(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.onnx"
    torch.onnx.export(_module(), (torch.zeros(SHAPE),), str(path), dynamo=False)
    session, threads = ort_session(path, ["CPUExecutionProvider"])
    options = session.get_session_options()
    assert threads == torch.get_num_threads() == options.intra_op_num_threads
    assert options.inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]
    _, served_threads = onnx_predictor(path, ["CPUExecutionProvider"])  # the export step's
    assert served_threads == threads


def test_deployment_runtime_follows_the_device() -> None:
    assert deployment_runtime("cpu") == "onnxruntime"
    trt_ok = import_tensorrt()[0] is not None
    assert deployment_runtime("cuda") == ("tensorrt" if trt_ok else "onnxruntime")
    with pytest.raises(ConfigError, match="did you mean 'onnxruntime'"):
        latency_runtime("onnxrutime")


def test_tensorrt_runtime_says_why_it_cannot_run_here() -> None:
    with pytest.raises(RuntimeUnavailable, match="tensorrt"):
        LATENCY_RUNTIMES["tensorrt"].check(CPU)


def test_table_file_is_per_runtime_version_and_threads() -> None:
    names = {table_file_name(CPU, runtime) for runtime in LATENCY_RUNTIMES.values()}
    assert len(names) == len(LATENCY_RUNTIMES)
    ort_name = table_file_name(CPU, LATENCY_RUNTIMES["onnxruntime"])
    import onnxruntime

    assert "onnxruntime" in ort_name and onnxruntime.__version__ in ort_name
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = table_file_name(CPU, LATENCY_RUNTIMES["onnxruntime"])
        torch.set_num_threads(2)
        two = table_file_name(CPU, LATENCY_RUNTIMES["onnxruntime"])
    finally:
        torch.set_num_threads(previous)
    assert one != two and "1threads" in one and "2threads" in two


def test_a_torch_table_is_never_read_as_an_onnxruntime_one(tmp_path: Path) -> None:
    items = {"m": (_module(), SHAPE)}
    eager = LatencyTable(CPU, "torch", cache_dir=tmp_path, timing_seconds=0.03)
    eager.lookup(items)
    eager.save()
    ort = LatencyTable(CPU, "onnxruntime", cache_dir=tmp_path, timing_seconds=0.03)
    assert ort.file != eager.file and ort._entries == {}  # nothing of torch's is read
    ort.lookup(items)
    ort.save()
    again = LatencyTable(CPU, "onnxruntime", cache_dir=tmp_path, timing_seconds=0.03)
    assert again._entries == ort._entries  # the ORT table is read back from its own file
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(
        [eager.file.name, ort.file.name]
    )


def test_table_entries_are_keyed_by_input_shape(tmp_path: Path) -> None:
    table = LatencyTable(CPU, "onnxruntime", cache_dir=tmp_path, timing_seconds=0.03)
    module = _module()
    table.lookup({"m": (module, SHAPE)})
    table.lookup({"m": (module, (1, 4, 16, 16))})
    table.lookup({"m": (module, (1, 4, 16, 16))}, whole=True)
    assert sorted(table._entries) == ["m|shape=1x4x16x16", "m|shape=1x4x8x8",
                                      "whole:m|shape=1x4x16x16"]  # fmt: skip
    batch4 = LatencyTable(CPU, "onnxruntime", cache_dir=tmp_path, batch_size=4)
    assert batch4.batch_shape(SHAPE) == (4, 4, 8, 8)


def test_calibration_recovers_the_per_call_cost_despite_one_slow_network() -> None:
    a, o = 0.05, 0.006
    counts = [21, 16, 21, 19, 18]
    sums = [0.30, 0.12, 0.45, 0.33, 0.28]
    measured = [a + s - o * n for s, n in zip(sums, counts, strict=True)]
    assert fit_calibration(sums, counts, measured, per_call_overhead=True) == pytest.approx((a, o))
    measured[3] *= 2.0  # timed during a slow spell
    fit_a, fit_o = fit_calibration(sums, counts, measured, per_call_overhead=True)
    assert fit_a == pytest.approx(a, abs=0.01) and fit_o == pytest.approx(o, abs=0.002)
    eager_a, eager_o = fit_calibration(sums, counts, measured, per_call_overhead=False)
    eager = np.median(np.subtract(measured, sums))  # negative here: the fixed part is 0
    assert eager < 0 and (eager_a, eager_o) == (0.0, 0.0)


def test_calibration_never_fits_a_negative_fixed_part() -> None:
    """Entries timed in a slow spell (every candidate's alone time high) made the free fit's
    fixed part negative, and a small network's predicted latency with it (CI, 2026-12-02:
    -0.027 ms against 0.053 measured, ONNX Runtime on a busy host)."""
    counts = np.array([21, 16, 21, 19, 18])
    measured = np.array([0.20, 0.12, 0.25, 0.22, 0.19])
    sums = measured + 0.05 + 0.001 * (counts - 19)  # the free fit: o = 0.001, a = -0.031
    fit_a, fit_o = fit_calibration(sums, counts, measured, per_call_overhead=True)
    assert fit_a == 0.0 and fit_o == pytest.approx(np.median((sums - measured) / counts))
    predicted = fit_a + sums - fit_o * counts
    assert np.median(predicted - measured) == pytest.approx(0.0, abs=1e-12)
    eager_a, eager_o = fit_calibration(sums, counts, measured, per_call_overhead=False)
    assert (eager_a, eager_o) == (0.0, 0.0)
