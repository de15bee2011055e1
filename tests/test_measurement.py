"""`dha measure`'s core: target resolution, counts against published figures, JSON report."""

from __future__ import annotations

import json

import pytest
import torch

from dha_train.errors import UserError
from pipeline.latency import LatencyConfig
from pipeline.measurement import SCHEMA_VERSION, measure_model, measure_target, resolve_target


def _named_available() -> bool:
    try:
        from dha_train.spaces.named import NAMED_ARCHITECTURES  # noqa: F401
    except ImportError:
        return False
    return True


needs_named = pytest.mark.skipif(
    not _named_available(), reason="named architectures not available yet"
)


def _count(spec: str) -> tuple[float, float]:
    target = resolve_target(spec, num_classes=1000, resolution=224)
    report = measure_target(target, backends=())
    assert report.latency == []
    return report.params_m, report.flops_m


# Published figures (README acceptance): params (M), multiply-adds (M, None = not checked).
@pytest.mark.parametrize(
    ("spec", "params_m", "flops_m"),
    [
        ("torchvision:mobilenet_v2", 3.50, 300.0),
        ("torchvision:resnet50", 25.6, 4100.0),
        pytest.param("named:proxylessnas_gpu", 7.12, 465.0, marks=needs_named),
        pytest.param("darts_v2", 4.72, None, marks=needs_named),
    ],
)
def test_counts_match_published_figures(spec: str, params_m: float, flops_m: float | None):
    got_params, got_flops = _count(spec)
    assert got_params == pytest.approx(params_m, rel=0.01)
    if flops_m is not None:
        assert got_flops == pytest.approx(flops_m, rel=0.01)


def test_report_json_follows_schema():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    )
    report = measure_model(
        model,
        resolution=16,
        num_classes=5,
        batch_sizes=(1,),
        threads=1,
        timing=LatencyConfig(warmup=1, min_iters=3, max_seconds=0.05),
        name="tiny",
    )
    data = json.loads(report.to_json())
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["target"] == {"name": "tiny", "kind": "module", "space": None, "source": ""}
    # conv: 16*16 positions * 8 out * 27 in; linear: 8*5; BN and ReLU excluded.
    assert data["multiply_adds"] == 16 * 16 * 8 * 27 + 8 * 5
    assert data["params"] == (8 * 27 + 8) + 2 * 8 + (8 * 5 + 5)
    assert data["flops_m"] == pytest.approx(data["multiply_adds"] / 1e6)
    assert data["unsupported_operators"] == {}
    [latency] = data["latency"]
    assert latency["status"] == "ok" and latency["threads"] == 1
    assert latency["median_ms"] > 0 and latency["throughput_ips"] > 0
    assert set(data["environment"]["versions"]) >= {"torch", "onnxruntime", "tensorrt"}


def test_weights_file_is_loaded(tmp_path):
    source = resolve_target("torchvision:mobilenet_v3_small", num_classes=7, resolution=32)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": source.model.state_dict()}, path)
    loaded = resolve_target(
        "torchvision:mobilenet_v3_small", num_classes=7, resolution=32, weights=path
    )
    for a, b in zip(
        source.model.state_dict().values(), loaded.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="do not fit"):
        resolve_target("torchvision:mobilenet_v3_small", num_classes=3, weights=path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_model", "unknown measurement target"),
        ("torchvision:no_such_net", "unknown torchvision model"),
        ("arch:/nonexistent/architecture.json", "does not exist"),
    ],
)
def test_bad_targets_raise_user_errors(spec: str, message: str):
    with pytest.raises(UserError, match=message):
        resolve_target(spec)


@needs_named
def test_derived_architecture_file_with_weights(tmp_path):
    from dha_train.spaces.arch import save_architecture
    from dha_train.spaces.named import named_architecture

    arch = named_architecture("proxylessnas_gpu", num_classes=10, resolution=32)
    arch_path = save_architecture(arch, tmp_path / "architecture.json")
    trained = resolve_target("proxylessnas_gpu", num_classes=10, resolution=32).model
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    # The record's own classes and resolution win over the (default) arguments.
    target = resolve_target(str(arch_path), weights=tmp_path / "weights.pt")
    assert (target.kind, target.space, target.num_classes, target.resolution) == (
        "arch",
        "mobilenet",
        10,
        32,
    )
    expected = trained.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in target.model.state_dict().items())
    assert resolve_target(f"arch:{arch_path}").name == "architecture"
