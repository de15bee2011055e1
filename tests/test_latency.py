"""Latency harness on a tiny model: real torch and real onnxruntime on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dha_train.errors import ConfigError
from pipeline.latency import (
    BACKENDS,
    LatencyConfig,
    LatencyResult,
    describe_environment,
    measure_latency,
)

FAST = LatencyConfig(warmup=1, min_iters=3, max_iters=50, max_seconds=0.05)
SHAPE = (3, 16, 16)
REPO = Path(__file__).resolve().parents[1]


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _by_key(results: list[LatencyResult]) -> dict[str, LatencyResult]:
    return {r.key: r for r in results}


def _check_ok(result: LatencyResult, threads: int) -> None:
    assert result.status == "ok", result.reason
    stats = result.timing
    assert stats is not None and stats.iterations >= FAST.min_iters
    assert 0 < stats.median_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.mean_ms > 0 and stats.std_ms >= 0
    assert result.throughput_ips == pytest.approx(result.batch_size * 1000 / stats.median_ms)
    assert result.threads == threads


def test_torch_and_onnxruntime_on_cpu():
    pytest.importorskip("export.onnx_export", reason="export.onnx_export not available yet")
    before = torch.get_num_threads()
    model = _tiny()
    results = measure_latency(
        model,
        input_shape=SHAPE,
        backends=("torch", "onnxruntime"),
        devices=("cpu",),
        batch_sizes=(1, 3),
        threads=1,
        config=FAST,
    )
    assert torch.get_num_threads() == before  # restored after the measurement
    assert next(model.parameters()).device.type == "cpu" and model.training  # caller's untouched
    by_key = _by_key(results)
    assert set(by_key) == {f"{b}.cpu.bs{n}" for b in ("torch", "onnxruntime") for n in (1, 3)}
    for result in results:
        _check_ok(result, threads=1)
    assert by_key["torch.cpu.bs3"].to_dict()["batch_size"] == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reasons given without CUDA")
def test_cuda_and_tensorrt_are_skipped_with_reasons():
    results = measure_latency(
        _tiny(),
        input_shape=SHAPE,
        backends=("torch", "torch_fp16", "tensorrt"),
        devices=("cpu", "cuda"),
        batch_sizes=(1,),
        config=FAST,
    )
    by_key = _by_key(results)
    assert by_key["torch.cpu.bs1"].status == "ok"
    for key in ("torch.cuda.bs1", "torch_fp16.cuda.bs1", "tensorrt.cuda.bs1"):
        assert by_key[key].status == "skipped"
        assert "CUDA is not available" in by_key[key].reason
    assert "CUDA only" in by_key["tensorrt.cpu.bs1"].reason
    assert "CUDA only" in by_key["torch_fp16.cpu.bs1"].reason
    assert all(r.timing is None for r in results if r.status == "skipped")


class _BatchOneOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:
            raise ValueError("this model runs at batch 1 only")
        return x.mean(dim=(2, 3))


def test_a_failing_combination_is_reported_and_the_rest_still_run():
    results = _by_key(
        measure_latency(
            _BatchOneOnly(), input_shape=SHAPE, batch_sizes=(1, 2), threads=1, config=FAST
        )
    )
    _check_ok(results["torch.cpu.bs1"], threads=1)
    assert results["torch.cpu.bs2"].status == "failed"
    assert "batch 1 only" in results["torch.cpu.bs2"].reason


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backends": ("torhc",)}, "did you mean 'torch'"),
        ({"devices": ("tpu",)}, "unknown device 'tpu'"),
        ({"batch_sizes": (0,)}, "not positive"),
    ],
)
def test_bad_choices_raise_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        measure_latency(_tiny(), input_shape=SHAPE, **options)


def test_environment_records_devices_and_versions():
    env = describe_environment()
    assert env["cpu"] and env["torch_threads"] >= 1
    assert env["versions"]["torch"] == torch.__version__
    assert env["versions"]["onnxruntime"]
    assert (env["gpu"] is None) == (not torch.cuda.is_available())


def test_registry_names_are_metric_safe():
    for name in BACKENDS:
        assert name.replace("_", "").isalnum()


def _gpu_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_gpu_check_exits_cleanly_without_cuda():
    done = _gpu_check()
    assert done.returncode == 0, done.stderr
    assert "CUDA absent" in done.stdout


@pytest.mark.e2e
def test_gpu_check_cpu_smoke_runs_every_section():
    for module in ("dha_train.nas.budgets", "dha_train.nas.search", "dha_train.nas.derive"):
        pytest.importorskip(module, reason=f"{module} (the trainer's search) not available yet")
    done = _gpu_check("--cpu-smoke")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in (
        "DHA step bs8",
        "(goal <= 1.1)",  # the ratio benchmarks, run as scripts
        "ratio vs nas",
        "torchvision PIL img/s",
        "onnxruntime: median spread",
        "derived after 2 DHA steps",
        "failed sections: none",
    ):
        assert line in done.stdout
    assert "proxylessnas_gpu   onnxruntime" in done.stdout
