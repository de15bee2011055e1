"""Real processes for the fault table: `dha` commands in their own process group (so that
kill -9 takes every process of a run, as a crash or the OOM killer does), a tracking server
that can be stopped and restarted on its port, and polling with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port, start_mlflow_server, stop_process, wait_for_http

__all__ = [
    "Dha",
    "RestartableServer",
    "all_runs",
    "error_lines",
    "epoch_steps",
    "every_epoch_once",
    "wait_until",
]


class Dha:
    """`dha` subcommands against one tracking store, checkpoints under ``checkpoints``."""

    def __init__(self, uri: str, checkpoints: Path, logs: Path) -> None:
        self.uri, self.checkpoints, self.logs = uri, checkpoints, logs
        logs.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.outputs: dict[int, tuple[Path, Path]] = {}  # pid -> its stdout and stderr files

    def env(self) -> dict[str, str]:
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri, "PYTHONUNBUFFERED": "1"}
        env["DHA_CHECKPOINT_DIR"] = str(self.checkpoints)
        env.pop("MLFLOW_RUN_ID", None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self, *args: str) -> subprocess.Popen:
        """Start ``dha args`` in its own session; stdout and stderr go to files in ``logs``."""
        self.count += 1
        out, err = (self.logs / f"{self.count:02d}-{args[0]}.{s}" for s in ("out", "err"))
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", *args],
                cwd=REPO,
                env=self.env(),
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        self.outputs[proc.pid] = (out, err)
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
        """Wait for ``proc`` (never longer than ``timeout``: a hang fails the test)."""
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise AssertionError(f"dha hung: still running after {timeout:.0f} s") from None
        out, err = self.outputs[proc.pid]
        return code, out.read_text(), err.read_text()

    def run(self, *args: str, timeout: float = 900) -> tuple[int, str, str]:
        return self.finish(self.start(*args), timeout)

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.checkpoints.glob("*/*/checkpoint.pt"))


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s session (it was started with a new one)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_until(
    predicate: Callable[[], Any], what: str, timeout: float, proc: subprocess.Popen | None = None
) -> Any:
    """Poll ``predicate`` until it is truthy; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


class RestartableServer:
    """A real `mlflow server` on a fixed 127.0.0.1 port that a test can stop and restart."""

    def __init__(self, store: Path) -> None:
        self.store, self.port = store, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.store.parent / f"server-{self.starts}.log", "w")  # noqa: SIM115
        self.proc = start_mlflow_server(self.port, self.store, output=log)
        wait_for_http(f"{self.uri}/health", self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)


def all_runs(client: MlflowClient) -> list[Run]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=1000)


def epoch_steps(client: MlflowClient, run_id: str) -> list[int]:
    """The training step of every epoch's metrics, in logging order (appended ones included):
    ``val_top1`` is logged once at the end of each epoch (epoch counters are not metrics)."""
    history = client.get_metric_history(run_id, "val_top1")
    return [m.step for m in sorted(history, key=lambda m: (m.timestamp, m.step))]


def every_epoch_once(client: MlflowClient, run_id: str, epochs: int) -> bool:
    """``epochs`` epochs were logged, each once, in order."""
    steps = epoch_steps(client, run_id)
    return len(steps) == epochs and steps == sorted(set(steps))


def error_lines(stderr: str) -> list[str]:
    """The CLI's ``error:`` lines (a progress bar may have left a carriage return before one)."""
    lines = (part.strip() for line in stderr.splitlines() for part in line.split("\r"))
    return [line for line in lines if line.startswith("error:")]
