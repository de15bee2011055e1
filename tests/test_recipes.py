"""DESIGN.md's recipes for a dataset, a mode, a format, a cell operation, a DA operation and a
step, followed once: one registry or table entry each, and the CLI, the defaults, the
trainer, the export step, the cell supernet, the DA policy and the MLproject take it up (the
space recipe: test_toy_space.py)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest

from dha_train.data import load_dataset
from dha_train.datasets import DATASETS, DatasetDefaults, DatasetEntry, defaults_help
from dha_train.engine.trainer import train
from dha_train.modes import MODES, Phase
from dha_train.spaces import baseline_architecture, build_network, build_supernet
from dha_train.spaces.arch import Architecture, architecture_from_dict
from dha_train.spaces.base import SpaceConfig
from dha_train.spaces.named import DARTS_V2
from dha_train.spaces.ops import OPS, ReLUConvBN
from dha_train.train_config import TrainConfig
from export.flavors import log_onnx_model
from export.format_builders import Exported, ExportInputs
from export.formats import FORMATS, FormatSpec
from export.runtime_report import measure_runtime, onnx_predictor
from pipeline.artifacts import ChildRecord, load_derived, log_derived
from pipeline.cli import SUBCOMMANDS, main
from pipeline.outputs import STEP_OUTPUTS, output_uri, read_output_json
from pipeline.params import PARAMS, STEP_PARAMS, add_params, mlproject_yaml, parse_values
from pipeline.runs import step_run
from pipeline.steps.search_train import resolve
from tests import test_budgets, test_spaces
from tests.conftest import REPO, SPACE_CONFIGS
from tests.test_trainer import RecordingSink


def test_a_registered_dataset_gets_choices_defaults_and_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = DatasetDefaults(resolution=8, epochs=3, width_mult=0.25, init_channels=4, layers=3)
    monkeypatch.setitem(
        DATASETS, "digits8", DatasetEntry("digits8", "dha_train.data:digits_bundle", small)
    )
    assert PARAMS["dataset"].parse("digits8") == "digits8"
    assert "digits8 8" in defaults_help("resolution")
    values = resolve({"dataset": "digits8", "resolution": 0, "epochs": 0, "width_mult": 0.0})
    assert (values["resolution"], values["epochs"], values["width_mult"]) == (8, 3, 0.25)
    bundle = load_dataset("digits8", None, 8, 0)
    assert bundle.train[0][0].shape == (3, 8, 8) and bundle.num_classes == 10


def test_a_registered_mode_is_offered_and_trained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(MODES, "da_only", (Phase(search=False, learn_da=True, learn_hp=False),))
    assert PARAMS["mode"].parse("da_only") == "da_only"
    data = load_dataset("digits", None, 8, 0)
    cfg = TrainConfig(
        space=SpaceConfig("mobilenet", 10, 8, width_mult=0.25), mode="da_only", epochs=1,
        batch_size=16, limit_steps_per_epoch=4, progress=False, checkpoint_every_steps=0,
    )  # fmt: skip
    sink = RecordingSink()
    result = train(cfg, data, workdir=tmp_path, sink=sink)
    assert len(result.history) == 1 and result.tau_probs is not None
    assert "tau_heatmap.png" in sink.figures


def _digits_child(resolution: int = 8) -> tuple[Architecture, ChildRecord]:
    """A mobilenet baseline child and its record, as search_train hands them on."""
    arch = baseline_architecture(SpaceConfig("mobilenet", 10, resolution, width_mult=0.25))
    data = load_dataset("digits", None, resolution, 0)
    record = ChildRecord(
        dataset="digits", data_dir="", seed=0, mode="baseline", space="mobilenet",
        resolution=resolution, num_classes=10, class_names=tuple(data.class_names),
        mean=tuple(data.mean), std=tuple(data.std), search_run_id="none",
    )  # fmt: skip
    return arch, record


def build_onnx_copy(inputs: ExportInputs) -> Exported:
    """A toy format for the recipe: the ONNX file again, under its own name, through ORT."""
    uri = log_onnx_model(
        inputs.onnx_path, name="onnx_copy", class_names=inputs.class_names,
        resolution=inputs.data.resolution, providers=["CPUExecutionProvider"],
    ).model_uri  # fmt: skip
    predict, threads = onnx_predictor(inputs.onnx_path, ["CPUExecutionProvider"])
    report = measure_runtime(
        predict, fmt="onnx_copy", backend="onnxruntime", device="cpu",
        providers=["CPUExecutionProvider"], threads=threads, val=inputs.data.val,
        test=inputs.data.test, resolution=inputs.data.resolution, max_seconds=0.1,
    )  # fmt: skip
    return Exported(uri, report)


def test_a_registered_format_is_exported_measured_and_listed(
    mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = FormatSpec(
        "onnx_copy", "onnxruntime", "onnxruntime", ("fp32",), f"{__name__}:build_onnx_copy"
    )
    monkeypatch.setitem(FORMATS, "onnx_copy", spec)
    arch, record = _digits_child()
    with mlflow.start_run() as run:
        log_derived(arch, build_network(arch).eval(), record)
    assert main(["export", "--search-run-id", run.info.run_id, "--formats", "onnx,onnx_copy"]) == 0
    export_run = mlflow.search_runs(
        filter_string="tags.`dha.step` = 'export'",
        search_all_experiments=True,
        output_format="list",
    )[0]
    exported = read_output_json("export", export_run.info.run_id)
    assert set(exported["models"]) == {"onnx", "onnx_copy"}
    assert export_run.data.metrics["onnx_copy.test_top1"] == pytest.approx(
        export_run.data.metrics["onnx.test_top1"]
    )  # the same file through the same runtime


def test_a_cell_operation_added_to_the_table_is_searched_counted_and_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(OPS, "conv_1x1", lambda c, stride: ReLUConvBN(c, c, 1, stride, 0))
    net = build_supernet(SPACE_CONFIGS["cell"])
    assert net.unit_sizes[0] == 2 * 8 and "conv_1x1<-0" in net.candidate_names(0)
    for test in (
        test_spaces.test_only_selected_candidates_run,
        test_spaces.test_architecture_records_round_trip,
        test_budgets.test_prediction_equals_counts_of_the_built_network,
    ):
        test("cell")
    genotype = DARTS_V2._replace(normal=(("conv_1x1", 0), *DARTS_V2.normal[1:]))
    arch = replace(baseline_architecture(SPACE_CONFIGS["cell"]), genotype=genotype)
    assert architecture_from_dict(arch.to_dict()) == arch
    assert net.candidate_names(0)[net.support_of(arch)[0][0]] == "conv_1x1<-0"


def _class_count_step() -> types.ModuleType:
    """A toy step module, ``pipeline/steps/class_count.py`` as the recipe writes it: reads
    search_train's child by URI, writes its one output (the child's class count)."""
    step = types.ModuleType("pipeline.steps.class_count", "class_count: the child's classes")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_params(parser, STEP_PARAMS["class_count"])

    def run(args: argparse.Namespace) -> None:
        values = parse_values(args, STEP_PARAMS["class_count"])
        with step_run("class_count", values):
            child = load_derived(values["search_run_id"])
            mlflow.log_dict({"classes": child.num_classes}, STEP_OUTPUTS["class_count"])

    step.add_arguments, step.run = add_arguments, run  # type: ignore[attr-defined]
    return step


def test_a_step_added_to_the_tables_is_a_command_an_entry_point_and_an_output(
    mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pipeline.steps.class_count", _class_count_step())
    monkeypatch.setitem(STEP_PARAMS, "class_count", ["search_run_id"])
    monkeypatch.setitem(SUBCOMMANDS, "class-count", ("class_count", "the child's classes"))
    monkeypatch.setitem(STEP_OUTPUTS, "class_count", "class_count.json")
    assert (
        '  class_count:\n    parameters:\n      search_run_id: {type: string, default: ""}\n'
        '    command: "dha class-count --search-run-id {search_run_id}"'
    ) in mlproject_yaml()
    arch, record = _digits_child()
    with mlflow.start_run() as search:
        log_derived(arch, build_network(arch).eval(), record)
    assert main(["class-count", "--search-run-id", search.info.run_id[:8]]) == 0
    (ran,) = mlflow.search_runs(
        filter_string="tags.`dha.step` = 'class_count'",
        search_all_experiments=True,
        output_format="list",
    )
    assert ran.info.status == "FINISHED"
    assert ran.data.params == {"search_run_id": search.info.run_id[:8]}
    assert output_uri("class_count", ran.info.run_id).endswith("/class_count.json")
    assert read_output_json("class_count", ran.info.run_id) == {"classes": 10}


# the DA recipe's one edit: an AugmentOp entry in AUGMENT_OPS (before Identity, which ends
# the paper's order); Invert is a table op: one table (n, 1, 256) of level v -> 255 - v
_INVERT = (
    '        AugmentOp("Invert", 0.0, False, '
    "table=lambda x, p: (255.0 - _levels(x)).expand(len(p), 1, 256)),\n"
)
_USE_INVERT = """
import torch
from dha_train.da.augment import apply_op, apply_pairs, sample_magnitudes
from dha_train.da.operations import NUM_OPS, OPS
from dha_train.da.policy import AugmentPolicy
from dha_train.data import load_dataset
from dha_train.plots import tau_heatmap

assert NUM_OPS == 15 and OPS[-2:] == ("Invert", "Identity"), OPS
policy = AugmentPolicy()
assert policy.probs().shape == (15, 15)  # the pair table grew with the op
gen = torch.Generator().manual_seed(0)
pairs = policy.sample(4096, gen)
assert (pairs == OPS.index("Invert")).any(dim=1).float().mean() > 0.05  # it is drawn
images = torch.stack([x for x, _ in load_dataset("digits", None, 16, 0).train][:8])
x = images.mul(255).round().to(torch.uint8)
mags, signs = sample_magnitudes(8, gen)
out = apply_op(x, torch.full((8,), OPS.index("Invert")), mags[:, 0], signs[:, 0])
assert torch.equal(out, (255 - x).float() / 255)  # the op applied, floats in [0, 1]
both = torch.full((8, 2), OPS.index("Invert"))
assert torch.allclose(apply_pairs(x, both, mags, signs), x.float() / 255)  # twice: identity
figure = tau_heatmap(policy.probs().detach().numpy())
ticks = [t.get_text() for t in figure.axes[0].get_xticklabels()]
assert "Invert" in ticks and len(ticks) == 15
print("ok")
"""


def test_a_da_operation_added_to_the_table_is_drawn_applied_and_plotted(tmp_path: Path) -> None:
    """The recipe followed as a contributor would: one entry added to AUGMENT_OPS in a copy
    of the package's source, which a fresh interpreter then imports."""
    package = tmp_path / "dha_train"
    shutil.copytree(REPO / "dha_train", package, ignore=shutil.ignore_patterns("__pycache__"))
    source = package / "da" / "operations.py"
    anchor = '        AugmentOp("Identity", 0.0, False),\n'
    text = source.read_text()
    assert text.count(anchor) == 1
    source.write_text(text.replace(anchor, _INVERT + anchor))
    run = subprocess.run(
        [sys.executable, "-c", _USE_INVERT],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
