"""The fault table: faults that real runs meet, each with its expected outcome and a check that
produces it with real processes (kill -9 of a whole process group), real SQLite stores, a real
`mlflow server` on 127.0.0.1 and a real ENOSPC (writes that land on /dev/full). README's
"Reliability" section lists the same rows; a test keeps the two equal.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from dha_train.engine.checkpoint import (
    CHECKPOINT_NAME,
    PREVIOUS_NAME,
    TEMPORARY_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from dha_train.errors import DiskFullError
from pipeline.runs import code_version, find_resumable_run, find_reusable_run, retire_orphans
from tests.conftest import REPO
from tests.fault_tools import (
    Dha,
    RestartableServer,
    all_runs,
    epoch_steps,
    error_lines,
    every_epoch_once,
    kill_group,
    wait_until,
)

# Tiny settings (a busy 2-core CPU takes seconds per step): search_train alone, 2 epochs of
# 4 steps; the whole pipeline, 2 epochs of 5 steps (1,258 digits at batch 256)
SEARCH = ("search-train", "--epochs", "2", "--batch-size", "32", "--workers", "0")
SEARCH += ("--resolution", "16", "--limit-steps-per-epoch", "4")
PIPELINE_TRAIN = ("--epochs", "2", "--batch-size", "256", "--workers", "0", "--resolution", "16")
PIPELINE = ("run", *PIPELINE_TRAIN, "--references", "", "--formats", "onnx")
SEARCH_LIKE_PIPELINE = ("search-train", *PIPELINE_TRAIN)
EPOCHS = 2  # every fault case trains 2 epochs
DEVICE_FULL = Path("/dev/full")  # every write to it fails with ENOSPC (Linux)


@dataclass
class Ctx:
    tmp: Path  # this case's own folder
    shared: Path  # the folder of the crash scenario that three cases share
    caplog: pytest.LogCaptureFixture


def _step_runs(client: MlflowClient, step: str) -> list:
    return [r for r in all_runs(client) if r.data.tags.get("dha.step") == step]


def _running(client: MlflowClient) -> list[str]:
    return [r.info.run_id for r in all_runs(client) if r.info.status == "RUNNING"]


def _result(client: MlflowClient, run_id: str) -> tuple[float, dict]:
    """(test top-1, architecture.json) of a search_train run."""
    arch = json.loads(Path(client.download_artifacts(run_id, "architecture.json")).read_text())
    return client.get_run(run_id).data.metrics["test_top1"], arch


@dataclass
class Crash:
    """One pipeline killed with kill -9 mid-training and rerun; the same training in a second
    store; then the pipeline again with reuse=false (the expensive part, run once)."""

    a: MlflowClient
    b: MlflowClient
    killed_main: str
    killed_search: str
    rerun: tuple[int, str, str]
    rerun_main: str  # the main run of the rerun
    second_store: tuple[int, str, str]
    no_reuse: tuple[int, str, str]


@functools.cache
def _crash(root: Path) -> Crash:
    a = Dha(f"sqlite:///{root}/a.db", root / "checkpoints", root / "logs")
    proc = a.start(*PIPELINE)
    wait_until(a.checkpoint_files, "checkpoint after epoch 1", 900, proc)
    kill_group(proc)
    client_a = MlflowClient(a.uri)
    killed_main = _step_runs(client_a, "main")[0].info.run_id
    killed_search = _step_runs(client_a, "search_train")[0].info.run_id
    assert len(_running(client_a)) == 2  # what a crash leaves behind
    rerun = a.run(*PIPELINE)
    (rerun_main,) = [r for r in _step_runs(client_a, "main") if r.info.run_id != killed_main]
    b = Dha(f"sqlite:///{root}/b.db", root / "checkpoints", root / "logs")
    second = b.run(*SEARCH_LIKE_PIPELINE)
    no_reuse = a.run(*PIPELINE, "--reuse", "false")
    return Crash(
        client_a,
        MlflowClient(b.uri),
        killed_main,
        killed_search,
        rerun,
        rerun_main.info.run_id,
        second,
        no_reuse,
    )


def check_kill_and_rerun(ctx: Ctx) -> None:
    crash = _crash(ctx.shared)
    code, out, err = crash.rerun
    assert code == 0, err[-3000:]
    assert _running(crash.a) == []
    assert f"continuing interrupted run {crash.killed_search}" in out
    search = crash.a.get_run(crash.killed_search)
    old_main = crash.a.get_run(crash.killed_main)
    assert old_main.info.status == "FAILED"
    assert old_main.data.tags["dha.replaced_by"] == crash.rerun_main
    assert crash.a.get_run(crash.rerun_main).info.status == "FINISHED"
    assert search.info.status == "FINISHED"
    assert search.data.tags["mlflow.parentRunId"] == crash.rerun_main
    assert "dha.replaced_by" not in search.data.tags and "dha.error" not in search.data.tags
    # metrics appended from the resumed step: every epoch is there, once
    assert every_epoch_once(crash.a, search.info.run_id, EPOCHS)
    reference = _step_runs(crash.b, "search_train")[0].info.run_id
    assert _result(crash.a, search.info.run_id) == _result(crash.b, reference)


def check_second_store(ctx: Ctx) -> None:
    crash = _crash(ctx.shared)
    code, out, err = crash.second_store
    assert code == 0, err[-3000:]
    afresh = [line for line in err.splitlines() if "starting afresh" in line]
    assert len(afresh) == 1 and crash.killed_search in afresh[0], err[-3000:]
    run = _step_runs(crash.b, "search_train")[0]
    assert run.info.status == "FINISHED" and "continuing" not in out
    assert every_epoch_once(crash.b, run.info.run_id, EPOCHS)
    history = Path(crash.b.download_artifacts(run.info.run_id, "history.json")).read_text()
    assert [h["epoch"] for h in json.loads(history)["history"]] == [1, 2]


def check_reuse_false(ctx: Ctx) -> None:
    crash = _crash(ctx.shared)
    code, out, err = crash.no_reuse
    assert code == 0, err[-3000:]
    runs = _step_runs(crash.a, "search_train")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    fresh = next(r for r in runs if r.info.run_id != crash.killed_search)
    assert f"[search_train] starting run {fresh.info.run_id}" in out
    assert every_epoch_once(crash.a, fresh.info.run_id, EPOCHS)  # trained, all of it
    assert _result(crash.a, fresh.info.run_id) == _result(crash.a, crash.killed_search)
    assert _running(crash.a) == []


def check_orphans(ctx: Ctx) -> None:
    uri = f"sqlite:///{ctx.tmp}/mlflow.db"
    client = MlflowClient(uri)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    owners = {"gone": (host, gone.pid), "alive": (host, os.getpid())}
    owners["elsewhere"] = ("another-host", gone.pid)
    ids = {}
    for name, (host, pid) in owners.items():
        tags = {"dha.step": "search_train", "dha.host": host, "dha.pid": str(pid)}
        tags["dha.code_version"] = code_version()
        ids[name] = client.create_run("0", tags=tags).info.run_id
    mlflow.set_tracking_uri(uri)
    retired = retire_orphans("0", replaced_by="r" * 32)
    assert [r.info.run_id for r in retired] == [ids["gone"]]
    run = client.get_run(ids["gone"])
    assert run.info.status == "FAILED" and run.data.tags["dha.replaced_by"] == "r" * 32
    assert "ended without closing the run" in run.data.tags["dha.error"]
    for name in ("alive", "elsewhere"):  # a live process, or one this host cannot see
        assert client.get_run(ids[name]).info.status == "RUNNING"
    # the retired run is the one a rerun may continue (when it has a checkpoint), none is reused
    found = find_resumable_run("search_train", {}, "0", lambda run: True)
    assert found is not None and found.info.run_id == ids["gone"]
    assert find_resumable_run("search_train", {}, "0", lambda run: False) is None
    assert find_reusable_run("search_train", {}, "0") is None
    client.set_terminated(ids["alive"], "FINISHED")
    assert find_reusable_run("search_train", {}, "0").info.run_id == ids["alive"]


def check_corrupt_latest(ctx: Ctx) -> None:
    tmp, caplog = ctx.tmp, ctx.caplog
    save_checkpoint({"global_step": 6, "w": torch.arange(4.0)}, tmp)
    save_checkpoint({"global_step": 12, "w": torch.arange(8.0)}, tmp)
    latest = tmp / CHECKPOINT_NAME
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a torn write
    with caplog.at_level(logging.WARNING, logger="dha_train.engine.checkpoint"):
        ckpt = load_checkpoint(tmp)
    assert ckpt is not None and ckpt["global_step"] == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "falling back to the previous one" in warnings[0]
    (tmp / PREVIOUS_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp)


def check_disk_full_checkpoint_write(ctx: Ctx) -> None:
    tmp = ctx.tmp
    save_checkpoint({"global_step": 6}, tmp)
    (tmp / TEMPORARY_NAME).symlink_to(DEVICE_FULL)
    with pytest.raises(DiskFullError, match="no space left") as info:
        save_checkpoint({"global_step": 12, "w": torch.zeros(1000)}, tmp)
    assert "\n" not in str(info.value)
    assert load_checkpoint(tmp) == {"global_step": 6}
    assert not (tmp / TEMPORARY_NAME).exists()  # nothing half-written is left behind


def _disk_full_then_rerun(tmp: Path, plant: Callable[[Dha, MlflowClient], Path]) -> None:
    """search_train with a write that fails with ENOSPC, then the space freed and a rerun."""
    dha = Dha(f"sqlite:///{tmp}/mlflow.db", tmp / "checkpoints", tmp / "logs")
    client = MlflowClient(dha.uri)
    proc = dha.start(*SEARCH)
    planted = plant(dha, client)
    code, out, err = dha.finish(proc, 600)
    assert code == 2, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and "no space left on the device" in lines[0], err[-3000:]
    (run,) = _step_runs(client, "search_train")
    assert run.info.status == "FAILED" and "no space left" in run.data.tags["dha.error"]
    (checkpoint,) = dha.checkpoint_files()
    assert load_checkpoint(checkpoint.parent) is not None  # intact, and readable
    planted.unlink(missing_ok=True)  # space freed (a failed checkpoint write removes its own)
    code, out, err = dha.run(*SEARCH)
    assert code == 0, err[-3000:]
    assert f"continuing interrupted run {run.info.run_id}" in out
    assert "resumed from" in err
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert len(set(epoch_steps(client, run.info.run_id))) == EPOCHS
    assert _running(client) == []


def _plant_in_checkpoint_folder(dha: Dha, client: MlflowClient) -> Path:
    """After the first checkpoint, the next one's temporary file lands on /dev/full."""
    (first,) = wait_until(dha.checkpoint_files, "the first checkpoint", 600)
    planted = first.parent / TEMPORARY_NAME
    while True:  # a save may be under way this instant: retry until the name is free
        try:
            planted.symlink_to(DEVICE_FULL)
            return planted
        except FileExistsError:
            time.sleep(0.01)


def _plant_in_artifacts(dha: Dha, client: MlflowClient) -> Path:
    """The checkpoint's copy among the run's artifacts lands on /dev/full."""
    (run,) = wait_until(lambda: _step_runs(client, "search_train"), "the run", 600)
    folder = Path(run.info.artifact_uri.removeprefix("file://")) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    planted = folder / CHECKPOINT_NAME
    planted.symlink_to(DEVICE_FULL)
    return planted


def check_disk_full_while_checkpointing(ctx: Ctx) -> None:
    _disk_full_then_rerun(ctx.tmp, _plant_in_checkpoint_folder)


def check_disk_full_while_logging_artifacts(ctx: Ctx) -> None:
    _disk_full_then_rerun(ctx.tmp, _plant_in_artifacts)


def check_server_outage(ctx: Ctx) -> None:
    tmp = ctx.tmp
    server = RestartableServer(tmp / "server")
    server.start()
    try:
        dha = Dha(server.uri, tmp / "checkpoints", tmp / "logs")
        client = MlflowClient(server.uri)
        proc = dha.start(*SEARCH)

        def first_epoch() -> bool:
            runs = _step_runs(client, "search_train")
            return bool(runs) and "val_top1" in client.get_run(runs[0].info.run_id).data.metrics

        wait_until(first_epoch, "the first epoch's metrics", 600, proc)
        server.stop()
        time.sleep(30)
        server.start()
        code, out, err = dha.finish(proc, 600)
        assert code == 0, err[-3000:]
        (run,) = _step_runs(client, "search_train")
        assert run.info.status == "FINISHED"
        assert every_epoch_once(client, run.info.run_id, EPOCHS)
        assert {"test_top1", "test_top5", "val_top1", "train_loss"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"architecture.json", "history.json", "child", "checkpoints"} <= artifacts
    finally:
        server.stop()


@dataclass(frozen=True)
class Fault:
    id: str
    fault: str
    expected: str
    check: Callable[[Ctx], None]
    slow: bool = True


FAULTS = [
    Fault(
        "orphaned-run",
        "a run left RUNNING by a process that is gone (kill -9, OOM, power cut)",
        "the next `dha run` marks it FAILED with `dha.error` and `dha.replaced_by`; runs of live "
        "processes and of other hosts are left alone",
        check_orphans,
        slow=False,
    ),
    Fault(
        "kill-and-rerun",
        "`dha run` killed with kill -9 (whole process group) mid search_train, then rerun",
        "search_train's run continues (same run id, metrics appended), the killed main run is "
        "FAILED with `dha.replaced_by`; nothing RUNNING; result equals an uninterrupted run's",
        check_kill_and_rerun,
    ),
    Fault(
        "second-store",
        "same parameters against a second tracking store, same checkpoint folder",
        "trains afresh with one `starting afresh` line and logs its full history",
        check_second_store,
    ),
    Fault(
        "reuse-false",
        "`dha run --reuse false` after a finished run",
        "a new search_train run that trains from step 0",
        check_reuse_false,
    ),
    Fault(
        "corrupt-checkpoint",
        "the latest checkpoint is torn (half its bytes)",
        "resume falls back to the previous checkpoint with one warning; both torn: one error",
        check_corrupt_latest,
        slow=False,
    ),
    Fault(
        "disk-full-write",
        "ENOSPC while writing a checkpoint",
        "one-line `DiskFullError`; the previous checkpoint intact; no temporary file left",
        check_disk_full_checkpoint_write,
        slow=False,
    ),
    Fault(
        "disk-full-checkpoint",
        "ENOSPC at a checkpoint mid search_train, then space freed and a rerun",
        "exit 2, one `error:` line, run FAILED; the rerun continues that run to FINISHED",
        check_disk_full_while_checkpointing,
    ),
    Fault(
        "disk-full-artifacts",
        "ENOSPC while logging the checkpoint artifacts, then space freed and a rerun",
        "exit 2, one `error:` line, run FAILED; the rerun continues that run to FINISHED",
        check_disk_full_while_logging_artifacts,
    ),
    Fault(
        "server-outage",
        "the `mlflow server` stopped for 30 s mid search_train, then restarted",
        "training waits on MLflow's retries and goes on: FINISHED with every metric and artifact",
        check_server_outage,
    ),
]


@pytest.mark.parametrize(
    "fault",
    [pytest.param(f, id=f.id, marks=[pytest.mark.e2e] if f.slow else []) for f in FAULTS],
)
def test_fault(
    fault: Fault,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    shared = tmp_path_factory.getbasetemp() / "crash"
    shared.mkdir(exist_ok=True)
    fault.check(Ctx(tmp_path, shared, caplog))


def test_readme_lists_every_fault() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Reliability", 1)[1].split("\n## ", 1)[0]
    for fault in FAULTS:
        row = f"| `{fault.id}` | {fault.fault} | {fault.expected} |"
        assert row in section, row
