"""The whole pipeline, as users run it, on tiny settings against real MLflow stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from dha_train.spaces import baseline_architecture
from dha_train.spaces.base import SpaceConfig
from export.champion import current_champion
from tests.conftest import REPO

TINY = [
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--resolution",
    "16",
    "--workers",
    "0",
    "--formats",
    "onnx,tensorrt",
]


def dha(*args: str, env_uri: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": env_uri, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _runs(client: MlflowClient) -> list[mlflow.entities.Run]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=1000)


def _assert_nothing_left_running(client: MlflowClient) -> None:
    assert [r.info.run_id for r in _runs(client) if r.info.status == "RUNNING"] == []


@pytest.mark.e2e
def test_default_pipeline_registers_and_reuses(mlflow_store: str, tmp_path: Path) -> None:
    first = dha("run", *TINY, "--references", "proxylessnas_gpu", env_uri=mlflow_store, cwd=REPO)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    client = MlflowClient(mlflow_store)
    runs = _runs(client)
    parents = [r for r in runs if r.data.tags.get("dha.step") == "main"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert {r.data.tags["dha.step"] for r in children} == {
        "search_train",
        "measure",
        "export",
        "register",
        "compare",
    }
    assert all(r.info.status == "FINISHED" for r in children)

    # MLflow as its users know it: a named experiment, named runs, descriptions, datasets
    (parent,) = parents
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.name == "dha-mobilenet-digits"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.run_name == "dha run: digits mobilenet dha"
    assert {r.info.run_name for r in children} == {
        f"{r.data.tags['dha.step']}: digits mobilenet dha" for r in children
    }
    assert "Table 5" in parent.data.tags["mlflow.note.content"]
    by_step = {r.data.tags["dha.step"]: r for r in children}
    for run in (parent, by_step["search_train"]):
        inputs = {(i.dataset.name, i.tags[0].value) for i in run.inputs.dataset_inputs}
        assert inputs == {
            ("digits-train", "training"),
            ("digits-val", "validation"),
            ("digits-test", "test"),
        }
    assert not {"epoch", "step", "phase"} & set(by_step["search_train"].data.metrics)
    search = by_step["search_train"]
    child = {a.path for a in client.list_artifacts(search.info.run_id, "child")}
    assert {
        "child/architecture.json",
        "child/weights.pt",
        "child/meta.json",
        "child/confusion_matrix.png",
        "child/per_class.json",
        "child/architecture.png",
    } <= child
    # the child's test figures were measured once, through the deployable network
    meta = json.loads(
        Path(client.download_artifacts(search.info.run_id, "child/meta.json")).read_text()
    )
    assert meta["top1"] == pytest.approx(search.data.metrics["test_top1"])
    measure = next(r for r in children if r.data.tags["dha.step"] == "measure")
    assert measure.data.metrics["top1"] == pytest.approx(meta["top1"])

    # registry: an ONNX version whose tags describe the ONNX file as ONNX Runtime runs it;
    # one epoch leaves the model at chance, so it is registered without champion, saying why
    name = "dha-mobilenet-digits-onnx"
    version = client.get_model_version_by_alias(name, "latest")
    tags = version.tags
    assert f"test top-1 {tags['test_top1']}%" in version.description
    export = next(r for r in children if r.data.tags["dha.step"] == "export")
    assert tags["dataset"] == "digits" and tags["export_run_id"] == export.info.run_id
    assert float(tags["val_top1"]) == pytest.approx(export.data.metrics["onnx.val_top1"], abs=1e-3)
    assert float(tags["test_top1"]) == pytest.approx(
        export.data.metrics["onnx.test_top1"], abs=1e-3
    )
    assert float(tags["latency_ms"]) > 0
    assert (tags["latency_backend"], tags["latency_device"], tags["latency_batch"]) == (
        "onnxruntime", "cpu", "1"
    )  # fmt: skip
    assert (tags["resolution"], tags["precision"], tags["target_device"]) == ("16", "fp32", "cpu")
    assert len(tags["onnx_sha256"]) == 64 and "max_params_m" not in tags
    assert float(tags["val_top1"]) < 20.0 and tags["champion_eligible"] == "false"
    assert current_champion(client, name) is None
    assert "registered without champion: not eligible: validation top-1" in first.stdout
    assert export.data.tags["tensorrt"].startswith("skipped (")
    assert f"models:/{name}/{version.version}" in first.stdout
    assert "Table 5" in first.stdout

    # Table 5 artifacts and metrics, and a compare table that includes this run
    assert {"params_m", "flops_m", "top1", "top5", "latency_ms.torch.cpu.bs1"} <= set(
        measure.data.metrics
    )
    compare = next(r for r in children if r.data.tags["dha.step"] == "compare")
    table = Path(client.download_artifacts(compare.info.run_id, "compare/compare.md")).read_text()
    assert measure.info.run_id[:8] in table

    # a second run reuses every finished step
    second = dha("run", *TINY, "--references", "proxylessnas_gpu", env_uri=mlflow_store, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    for step in ("search_train", "measure", "export", "register"):
        assert f"[{step}] reusing FINISHED run" in second.stdout
    _assert_nothing_left_running(client)

    # predict through the registry, from the images of a folder
    images = tmp_path / "images"
    images.mkdir()
    from torchvision.transforms.functional import to_pil_image

    from dha_train.data import load_dataset

    bundle = load_dataset("digits", None, 16, seed=0)
    for i in range(3):
        to_pil_image(bundle.test[i][0]).save(images / f"digit{i}.png")
    out = dha(
        "predict",
        "--model",
        f"models:/{name}@latest",
        str(images),
        env_uri=mlflow_store,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:  # "<path>: <class> <prob>, ... (5 classes)"
        path, ranked = line.rsplit(": ", 1)
        probs = [float(pair.split()[1]) for pair in ranked.split(", ")]
        assert path.endswith(".png") and len(probs) == 5 and probs == sorted(probs, reverse=True)

    # dha benchmark: the ONNX row through ONNX Runtime gives the registered version's own
    # test top-1; TensorRT, skipped at export, is a row with the reason
    bench = dha(
        "benchmark", "--model", f"models:/{name}@latest", "--batch", "4", "--seconds", "0.1",
        env_uri=mlflow_store, cwd=tmp_path,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = {
        cells[0]: cells
        for line in bench.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| format")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == {"pytorch", "onnx", "tensorrt"}, bench.stdout
    assert rows["onnx"][-1] == "ok" and float(rows["onnx"][5]) > 0 and float(rows["onnx"][2]) > 0
    assert float(rows["onnx"][3]) == pytest.approx(float(tags["test_top1"]), abs=0.01)
    assert rows["tensorrt"][-1].startswith("not exported: ")


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--space", "resnet"], "unknown space 'resnet'"),
        (["--dataset", "imagefolder", "--data-dir", "/nonexistent/folder"], "does not exist"),
        (["--max-params-m", "0.0001"], "budget"),
        (["--formats", "tensorrt"], "TensorRT"),
        (["--epohcs", "3"], "did you mean --epochs"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing_running(
    mlflow_store: str, args: list[str], message: str
) -> None:
    result = dha("run", *TINY, *args, env_uri=mlflow_store, cwd=REPO, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    client = MlflowClient(mlflow_store)
    _assert_nothing_left_running(client)
    assert client.search_model_versions("") == []


@pytest.mark.e2e
def test_stray_and_corrupt_files_are_skipped_and_counted_in_the_run(
    mlflow_store: str, tmp_path: Path
) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "data" / "train" / "a" / "labels.csv").write_text("x")
    (tmp_path / "data" / "train" / "a" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "data" / "val" / "b" / "broken.png").write_bytes(b"not a png")
    result = dha(
        "search-train",
        *TINY[:-2],
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "data"),
        "--limit-steps-per-epoch",
        "1",
        env_uri=mlflow_store,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(mlflow_store)
    (run,) = _runs(client)
    assert run.data.params["data.skipped_non_image"] == "2"
    assert run.data.params["data.skipped_unreadable"] == "1"
    _assert_nothing_left_running(client)


@pytest.mark.e2e
def test_the_found_child_retrains_from_its_run_id(mlflow_store: str, tmp_path: Path) -> None:
    """``--architecture <search_train run id>`` with mode da_hpo trains that run's child as a
    fixed network (the study's ``dha_fixed`` row): the new run's child is that architecture,
    not the space's baseline, with its own trained weights."""
    tiny = [*TINY[:-2], "--limit-steps-per-epoch", "2"]
    first = dha("search-train", *tiny, env_uri=mlflow_store, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    client = MlflowClient(mlflow_store)
    (searched,) = _runs(client)
    short = searched.info.run_id[:8]
    second = dha(
        "search-train", *tiny, "--mode", "da_hpo", "--architecture", short,
        env_uri=mlflow_store, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-2000:]
    (retrained,) = [r for r in _runs(client) if r.info.run_id != searched.info.run_id]
    assert retrained.data.params["mode"] == "da_hpo"
    assert retrained.data.params["architecture"] == searched.info.run_id  # the prefix, resolved

    def child(run: mlflow.entities.Run, name: str) -> Path:
        return Path(client.download_artifacts(run.info.run_id, f"child/{name}"))

    found = json.loads(child(searched, "architecture.json").read_text())
    assert json.loads(child(retrained, "architecture.json").read_text()) == found
    space = SpaceConfig("mobilenet", 10, 16, width_mult=found["width_mult"])
    assert found != baseline_architecture(space).to_dict()  # else the test proves nothing
    assert child(searched, "weights.pt").read_bytes() != child(retrained, "weights.pt").read_bytes()
    _assert_nothing_left_running(client)


@pytest.mark.e2e
def test_pipeline_against_a_tracking_server(mlflow_server: str) -> None:
    """The same code path a team uses with a shared server (PostgreSQL + artifact store)."""
    result = dha(
        "run",
        *TINY,
        "--space",
        "cell",
        "--references",
        "",
        "--formats",
        "onnx",
        env_uri=mlflow_server,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    # a tiny run may stay near chance, so it need not be champion; it is registered either way
    latest = client.get_model_version_by_alias("dha-cell-digits-onnx", "latest")
    assert latest.tags["champion_eligible"] in ("true", "false") and latest.description
    steps = {r.data.tags.get("dha.step"): r.info.status for r in _runs(client)}
    assert steps["main"] == "FINISHED" and steps["search_train"] == "FINISHED"
