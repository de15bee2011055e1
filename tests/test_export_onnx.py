"""ONNX export and the parity gate, on a conv net trained on real digits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from export.errors import ExportError
from export.onnx_export import (
    BATCH_AXIS,
    INPUT_NAME,
    OUTPUT_NAME,
    check_onnx_parity,
    export_onnx,
    onnx_execution_providers,
    onnx_session,
)
from export.parity import PARITY_GATES, compare_logits, require_parity
from tests.test_export_support import RESOLUTION, trained_digits


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    export_onnx(trained_digits().model, resolution=RESOLUTION, path=path)
    return path


def test_export_is_one_checked_file_with_dynamic_batch(exported) -> None:
    assert sorted(p.name for p in exported.parent.iterdir()) == ["digits.onnx"]
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == BATCH_AXIS
    assert [d.dim_value for d in dims[1:]] == [3, RESOLUTION, RESOLUTION]
    assert model.opset_import[0].version == 17
    session = onnx_session(exported)
    for batch in (1, 7):
        out = session.run(None, {INPUT_NAME: np.random.rand(batch, 3, 32, 32).astype(np.float32)})
        assert out[0].shape == (batch, 10)


def test_parity_gate_passes_on_real_images(exported) -> None:
    trained = trained_digits()
    report = check_onnx_parity(trained.model, exported, trained.val_images, strict=True)
    assert report.passed and report.n_images == len(trained.val_images)
    assert report.top1_agreement >= 0.999
    assert report.max_abs_diff <= 1e-3
    # the logits are not tiny, so the bound above means something
    with torch.no_grad():
        assert trained.model(trained.val_images).abs().max().item() > 1.0
    assert set(report.metrics("onnx")) == {
        "onnx.n_images",
        "onnx.top1_agreement",
        "onnx.max_abs_diff",
        "onnx.passed",
    }


def test_parity_gate_fails_on_a_damaged_graph(exported, tmp_path) -> None:
    """Scale the last layer's weights in the ONNX file: logits move, the gate must fail."""
    model = onnx.load(str(exported))
    weights = [t for t in model.graph.initializer if len(t.dims) == 2]  # the linear head
    array = onnx.numpy_helper.to_array(weights[0])
    weights[0].CopyFrom(onnx.numpy_helper.from_array(array * 1.01, weights[0].name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    trained = trained_digits()
    report = check_onnx_parity(trained.model, damaged, trained.val_images)
    assert not report.passed and report.max_abs_diff > 1e-3
    with pytest.raises(ExportError, match="parity gate"):
        check_onnx_parity(trained.model, damaged, trained.val_images, strict=True)


def test_simplified_export_keeps_parity(tmp_path) -> None:
    trained = trained_digits()
    path = export_onnx(
        trained.model, resolution=RESOLUTION, path=tmp_path / "s.onnx", simplify=True
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]
    assert check_onnx_parity(trained.model, path, trained.val_images[:64], strict=True).passed


@pytest.mark.parametrize("opset", [9, 0])
def test_too_old_opset_is_a_user_error(opset: int, tmp_path) -> None:
    with pytest.raises(ExportError, match="opset"):
        export_onnx(trained_digits().model, resolution=32, path=tmp_path / "x.onnx", opset=opset)


@pytest.mark.parametrize("precision", sorted(PARITY_GATES))
def test_every_gate_accepts_equal_and_rejects_swapped_logits(precision: str) -> None:
    gate = PARITY_GATES[precision]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 10)).astype(np.float32) * 5
    same = compare_logits(logits, logits.copy(), **vars(gate))
    assert same.passed and same.top1_agreement == 1.0 and same.max_abs_diff == 0.0
    swapped = logits.copy()
    swapped[:10] = swapped[:10, ::-1]  # 5% of rows get another top-1
    report = compare_logits(logits, swapped, **vars(gate))
    assert report.top1_agreement == pytest.approx(0.95)
    assert not report.passed
    with pytest.raises(ExportError, match="parity gate"):
        require_parity(report, precision)


def test_non_finite_output_fails_the_gate() -> None:
    logits = np.eye(4, dtype=np.float32)
    broken = logits.copy()
    broken[0, 1] = np.nan
    assert not compare_logits(logits, broken, min_top1_agreement=0.0, max_abs_diff=None).passed


def test_cpu_machine_uses_the_cpu_provider_only() -> None:
    providers = onnx_execution_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in providers) == (
        torch.cuda.is_available() and len(providers) == 2
    )
