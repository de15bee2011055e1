"""benchmark: every format of one model on this machine, side by side (Ultralytics'
``yolo benchmark`` for this pipeline).

For a registered model (``--model models:/<name>@<alias>``) or an export run
(``--export-run-id``): one row per format with its top-1/top-5 on the held-out test split
through the format's own runtime (ONNX Runtime; the TensorRT engine runner), its median
latency at batch 1 and at ``--batch``, and its size on disk (what ``models:/`` downloads).
The derived child in PyTorch eager is the reference row. A format that was not exported, or
cannot run on this machine, is a row with the reason. Nothing is logged to MLflow.

Example: dha benchmark --model models:/dha-mobilenet-digits-onnx@champion
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from torch.utils.data import Dataset

from dha_train.data import load_dataset
from dha_train.errors import ConfigError, UserError
from dha_train.timing import time_callable
from export.formats import FORMATS
from export.runtime_report import Predictor, onnx_predictor, topk_accuracy
from export.tensorrt_runtime import TensorRTRunner, tensorrt_status
from export.wrap import deployable
from pipeline.artifacts import load_derived
from pipeline.model_uri import check_model_uri
from pipeline.outputs import read_output_json
from pipeline.run_ids import resolve_run_id

__all__ = ["BenchRow", "add_arguments", "run", "benchmark_table"]


@dataclass(frozen=True)
class BenchRow:
    """One format on this machine; ``status`` is "ok" or why it has no figures."""

    fmt: str
    runtime: str
    status: str
    size_mb: float | None = None
    test_top1: float | None = None
    test_top5: float | None = None
    latency_bs1_ms: float | None = None
    latency_batch_ms: float | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a registered model, e.g. models:/<name>@champion")
    which.add_argument("--export-run-id", help="run id of a FINISHED export step")
    parser.add_argument(
        "--batch", type=int, default=32, help="the larger batch size timed (default 32)"
    )
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="timing budget per latency figure (default 1)"
    )


def _folder_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


@dataclass(frozen=True)
class _Bench:
    """What every row is measured on: the test split, the input side, the batch, the budget."""

    test: Dataset
    resolution: int
    batch: int
    seconds: float

    def row(self, fmt: str, runtime: str, predict: Predictor, size_mb: float) -> BenchRow:
        top1, top5 = topk_accuracy(predict, self.test)
        rng = np.random.default_rng(0)
        times = []
        for batch in (1, self.batch):
            x = rng.random((batch, 3, self.resolution, self.resolution), dtype=np.float32)
            stats = time_callable(lambda x=x: predict(x), device="cpu", max_seconds=self.seconds)
            times.append(stats.median_ms)
        return BenchRow(fmt, runtime, "ok", size_mb, top1, top5, times[0], times[1])


def _torch_predictor(model: torch.nn.Module) -> Predictor:
    def predict(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(images)).numpy()

    return predict


def _format_predictor(fmt: str, local: Path) -> tuple[Predictor | None, str]:
    """A predictor through ``fmt``'s runtime on this CPU machine, or None and why not."""
    if fmt == "onnx":  # the file the MLmodel's onnx flavor names
        onnx_file = local / Model.load(str(local)).flavors["onnx"]["data"]
        predict, _ = onnx_predictor(onnx_file, ["CPUExecutionProvider"])
        return predict, "ok"
    available, reason = tensorrt_status()
    if not available:
        return None, f"cannot run here: {reason}"
    (plan,) = local.rglob("*.plan")  # the pyfunc's artifact, its sidecar beside it
    return TensorRTRunner(plan), "ok"


def benchmark_table(export_run_id: str, args: argparse.Namespace) -> list[BenchRow]:
    """The rows for export run ``export_run_id``: PyTorch eager first, then every format."""
    exported = read_output_json("export", export_run_id)
    params = MlflowClient().get_run(export_run_id).data.params
    # an export run from before derive was folded into search_train names the derive run,
    # whose child/ holds the same record
    search_run_id = params.get("search_run_id") or params.get("derive_run_id", "")
    derived = load_derived(search_run_id)
    rec = derived.record
    data = load_dataset(rec.dataset, rec.data_dir or None, rec.resolution, rec.seed)
    model = deployable(derived.model, rec.mean, rec.std).eval()
    buffer = io.BytesIO()
    torch.save(derived.model.state_dict(), buffer)
    bench = _Bench(data.test, rec.resolution, args.batch, args.seconds)
    rows = [
        bench.row(
            "pytorch", "torch eager (reference)", _torch_predictor(model), buffer.tell() / 1e6
        )
    ]
    for fmt, spec in FORMATS.items():
        if fmt not in exported["models"]:
            why = exported["skipped"].get(fmt, "not in this export run's --formats")
            rows.append(BenchRow(fmt, spec.runtime, f"not exported: {why}"))
            continue
        local = Path(mlflow.artifacts.download_artifacts(exported["models"][fmt]))
        predict, status = _format_predictor(fmt, local)
        if predict is None:
            rows.append(BenchRow(fmt, spec.runtime, status, _folder_mb(local)))
        else:
            rows.append(bench.row(fmt, spec.runtime, predict, _folder_mb(local)))
    return rows


def _markdown(rows: list[BenchRow], batch: int) -> str:
    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"| format | runtime | size (MB) | test top-1 (%) | test top-5 (%) | latency bs1 (ms) "
        f"| latency bs{batch} (ms) | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.fmt} | {r.runtime} | {cell(r.size_mb, 2)} | {cell(r.test_top1, 2)} "
            f"| {cell(r.test_top5, 2)} | {cell(r.latency_bs1_ms, 3)} "
            f"| {cell(r.latency_batch_ms, 3)} | {r.status} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    if args.batch < 2 or args.seconds <= 0:
        raise ConfigError(
            f"--batch {args.batch} --seconds {args.seconds}: give a batch >= 2 and a positive "
            "timing budget"
        )
    client = MlflowClient()
    if args.model:
        uri = check_model_uri(args.model)
        try:
            export_run_id = mlflow.models.get_model_info(uri).run_id
        except mlflow.exceptions.MlflowException as exc:
            raise UserError(f"cannot read model {uri}: {exc.message.splitlines()[0]}") from None
    else:
        export_run_id = resolve_run_id(client, args.export_run_id, what="export run")
    rows = benchmark_table(export_run_id, args)
    print(f"dha benchmark of export run {export_run_id} on this machine (CPU)", flush=True)
    print(_markdown(rows, args.batch), flush=True)
