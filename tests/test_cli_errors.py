"""Every user mistake we know of is one `error:` line and exit status 2, and leaves no run RUNNING.

One real SQLite store holds what the mistakes refer to: a registered ONNX model (a tiny
real network), a measure run with Table 5 metrics and a search_train run without them. Each row
runs the real `dha` entry point in this process: an unexpected exception fails the row
with its traceback instead of passing as "some error".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from torch import nn

from dha_train.spaces import baseline_architecture
from dha_train.spaces.arch import save_architecture
from dha_train.spaces.base import SpaceConfig
from export.champion import eligibility
from export.flavors import log_onnx_model
from export.onnx_export import export_onnx
from export.registry import register_model_version
from pipeline.cli import main

MODEL = "dha-tiny-digits-onnx"
RESOLUTION = 8


@dataclass
class Store:
    uri: str
    folder: Path
    measure_id: str
    search_id: str
    image: Path
    broken: Path
    arch: Path  # a small architecture JSON, quick to count and time


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    onnx_path = export_onnx(net.eval(), resolution=RESOLUTION, path=folder / "tiny.onnx")
    with mlflow.start_run(run_name="export") as run:
        mlflow.set_tag("dha.step", "export")
        info = log_onnx_model(
            onnx_path, name="model", class_names=["a", "b", "c"], resolution=RESOLUTION
        )
    allowed = eligibility(val_top1=90.0, num_classes=3)  # above twice chance: champion
    register_model_version(
        info.model_uri, name=MODEL, tags={"val_top1": 90.0, **allowed.tags()}, budgets={}
    )
    with mlflow.start_run(run_name="measure") as run:
        mlflow.set_tags({"dha.step": "measure", "dha.dataset": "digits", "dha.space": "cell"})
        mlflow.log_metrics({"top1": 50.0, "params_m": 0.1, "latency_ms.torch.cpu.bs1": 1.0})
        measure_id = run.info.run_id
    with mlflow.start_run(run_name="search_train") as run:
        mlflow.set_tag("dha.step", "search_train")
        search_id = run.info.run_id
    image = folder / "images" / "one.png"
    image.parent.mkdir()
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(image)
    broken = folder / "images" / "broken.png"
    broken.write_bytes(b"not a png")
    arch = folder / "arch.json"
    save_architecture(
        baseline_architecture(SpaceConfig("cell", 3, 16, init_channels=4, layers=3)), arch
    )
    yield Store(uri, folder, measure_id, search_id, image, broken, arch)
    mp.undo()


Args = Callable[[Store], list[str]]
CUDA = torch.cuda.is_available()

# (what the user typed, expected exit status, fragment of the one error line or of stdout)
ROWS: list[tuple[str, Args, int, str]] = [
    ("unknown command", lambda s: ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ("misspelt flag", lambda s: ["run", "--datset", "digits"], 2, "did you mean --dataset"),
    ("unknown model", lambda s: ["predict", "--model", "models:/dha-tiny@champion", str(s.image)],
     2, f"no registered model 'dha-tiny' (did you mean '{MODEL}'?)"),
    ("unknown alias", lambda s: ["predict", "--model", f"models:/{MODEL}@prod", str(s.image)],
     2, "has no alias 'prod'; its aliases: @champion"),
    ("unknown version", lambda s: ["predict", "--model", f"models:/{MODEL}/7", str(s.image)],
     2, "has no version '7'; its versions: 1"),
    ("no such model folder", lambda s: ["predict", "--model", "my_model", str(s.image)],
     2, "no MLflow model at 'my_model'"),
    ("top 0", lambda s: ["predict", "--model", f"models:/{MODEL}@champion", "--top", "0",
                         str(s.image)], 2, "--top 0"),
    ("top -1", lambda s: ["predict", "--model", f"models:/{MODEL}@champion", "--top", "-1",
                          str(s.image)], 2, "--top -1"),
    ("no such image", lambda s: ["predict", "--model", f"models:/{MODEL}@champion", "nope.png"],
     2, "no such image file or folder: 'nope.png'"),
    ("one unreadable image", lambda s: ["predict", "--model", f"models:/{MODEL}@champion",
                                        str(s.image), str(s.broken)],
     2, "1 of 2 images could not be read"),
    ("only unreadable images", lambda s: ["predict", "--model", f"models:/{MODEL}@champion",
                                          str(s.broken)], 2, "no readable image among the 1"),
    ("short run id", lambda s: ["compare", "--run-ids", s.measure_id[:8]], 0, "| digits |"),
    ("unknown run id", lambda s: ["compare", "--run-ids", "0123abcd"], 2, "no run with id"),
    ("not a run id", lambda s: ["compare", "--run-ids", "run-7"], 2, "is not a run id"),
    ("too short an id", lambda s: ["compare", "--run-ids", s.measure_id[:2]], 2, "too short"),
    ("not a measure run", lambda s: ["compare", "--run-ids", s.search_id[:8]],
     2, "is a search_train run, which has no Table 5 figures"),
    ("two sources", lambda s: ["compare", "--experiment", "Default", "--registered-model", MODEL],
     2, "--experiment and --registered-model both choose"),
    ("unknown experiment", lambda s: ["compare", "--experiment", "nope"],
     2, "no experiment named 'nope'"),
    ("unknown registered model", lambda s: ["compare", "--registered-model", "nope"],
     2, "no registered model 'nope'"),
    ("profile nothing", lambda s: ["profile"], 2, "the following arguments are required: --arch"),
    ("threads 0", lambda s: ["profile", "--arch", "darts_v2", "--threads", "0"],
     2, "--threads 0: must be at least 1"),
    ("resolution 0", lambda s: ["profile", "--arch", "darts_v2", "--resolution", "0"],
     2, "--resolution 0"),
    ("max seconds 0", lambda s: ["profile", "--arch", "darts_v2", "--max-seconds", "0"],
     2, "--max-seconds 0"),
    ("misspelt backend", lambda s: ["profile", "--arch", "darts_v2", "--backends", "onnx"],
     2, "onnxruntime"),
    ("misspelt step backend", lambda s: ["measure", "--search-run-id", s.search_id,
                                         "--backends", "onnx"], 2, "onnxruntime"),
    ("misspelt run backend", lambda s: ["run", "--backends", "torch,onnx"], 2,
     "unknown backend 'onnx': choose one of torch,"),
    ("unknown run reference", lambda s: ["run", "--references", "darts"], 2,
     "unknown reference architecture 'darts' (did you mean 'darts_v2'?)"),
    ("unknown step reference", lambda s: ["measure", "--search-run-id", s.search_id,
                                          "--references", "resnet50"], 2,
     "unknown reference architecture 'resnet50'"),
    ("weights without json", lambda s: ["profile", "--arch", "darts_v2", "--weights", "w.pt"],
     2, "--weights goes with an architecture JSON"),
    ("measure no run", lambda s: ["measure"], 2, "no search_train run id given"),
    ("old derive step", lambda s: ["derive", "--search-run-id", s.search_id], 2,
     "search-train derives the child"),
    ("old measure --arch", lambda s: ["measure", "--arch", "darts_v2"], 2, "dha profile --arch"),
    ("unknown search run", lambda s: ["measure", "--search-run-id", "deadbeef"],
     2, "no search_train run with id 'deadbeef'"),
    ("run without the child", lambda s: ["measure", "--search-run-id", s.measure_id],
     2, "has no child (runs:/"),
    ("export without the child", lambda s: ["export", "--search-run-id", s.search_id],
     2, "has no child (runs:/"),
    ("not an export run", lambda s: ["register", "--export-run-id", s.measure_id[:8],
                                     "--measure-run-id", s.measure_id], 2, "has no exported.json"),
    ("input too small", lambda s: ["run", "--resolution", "3"], 2, "resolution >= 8"),
    ("architecture while searching", lambda s: ["search-train", "--architecture", str(s.arch),
                                                "--space", "cell"], 2, "mode=dha searches one"),
    ("architecture of another run", lambda s: ["search-train", "--architecture", str(s.arch),
                                               "--mode", "da_hpo"],
     2, "has space=cell, num_classes=3, init_channels=4, layers=3, but this run has space="),
    ("architecture is a folder", lambda s: ["search-train", "--architecture", str(s.folder),
                                            "--mode", "da_hpo"], 2, "cannot be read"),
    ("no such architecture file", lambda s: ["search-train", "--architecture", "nope.json",
                                             "--mode", "da_hpo"], 2, "nope.json does not exist"),
    ("architecture run unknown", lambda s: ["search-train", "--architecture", "deadbeef",
                                            "--mode", "da_hpo"],
     2, "no search_train run with id 'deadbeef'"),
    ("architecture run without child", lambda s: ["search-train", "--architecture",
                                                  s.search_id, "--mode", "da_hpo"],
     2, "has no child/architecture.json"),
    ("unknown export run", lambda s: ["register", "--export-run-id", "deadbeef",
                                      "--measure-run-id", s.measure_id], 2, "no export run"),
]  # fmt: skip
if not CUDA:  # the only timings asked for cannot run on a CPU-only machine
    ROWS += [
        ("cuda on a CPU machine", lambda s: ["profile", "--arch", str(s.arch), "--device",
                                             "cuda"], 2, "no timing could run on this machine"),
        ("tensorrt on a CPU machine", lambda s: ["profile", "--arch", str(s.arch), "--backends",
                                                 "tensorrt"], 2, "no timing could run"),
    ]  # fmt: skip


def _running(uri: str) -> list[str]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r.info.run_id for r in client.search_runs(experiments) if r.info.status == "RUNNING"]


def _runs(uri: str) -> int:
    client = MlflowClient(uri)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


@pytest.mark.parametrize(("case", "argv", "status", "fragment"), ROWS, ids=[r[0] for r in ROWS])
def test_user_mistake_is_one_line_and_exit_2(
    store: Store,
    capsys: pytest.CaptureFixture[str],
    case: str,
    argv: Args,
    status: int,
    fragment: str,
) -> None:
    runs = _runs(store.uri)
    try:
        code = main(argv(store))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == status, (out, err)
    if status == 0:
        assert fragment in out and not err.strip().startswith("error:")
    else:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], err
        assert "Traceback" not in err
    assert mlflow.active_run() is None, case  # in-process: a step's run must end itself
    assert _running(store.uri) == []
    if argv(store)[0] == "run" and status:  # dha run checks every step's input first
        assert _runs(store.uri) == runs, case


def test_predict_elsewhere_creates_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(["predict", "--model", f"models:/{MODEL}@champion", "x.png"]) == 2
    assert "no MLflow store here" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_predict_reads_folders_below_hidden_ones_and_the_rest_of_a_batch(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / ".cache" / "photos"
    (folder / ".thumbs").mkdir(parents=True)
    for name in ("a.png", ".thumbs/skip.png"):
        Image.new("RGB", (8, 8)).save(folder / name)
    assert main(["predict", "--model", f"models:/{MODEL}@champion", "--top", "2", str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(folder / "a.png"))
    assert len(lines[0].split(": ", 1)[1].split(", ")) == 2
