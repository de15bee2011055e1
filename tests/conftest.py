"""Shared fixtures: a real SQLite-backed MLflow store, a real `mlflow server` on loopback, and
a real `mlflow models serve` scoring server for a model URI."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pytest

from dha_train.spaces import SPACES, tiny_config

REPO = Path(__file__).resolve().parents[1]


class _SpaceConfigs(Mapping[str, Any]):
    """A test-sized configuration of every registered space, read live from the registry:
    tests parametrised over it cover a new space by default (tests/test_toy_space.py)."""

    def __getitem__(self, name: str) -> Any:
        return tiny_config(name)

    def __iter__(self) -> Iterator[str]:
        return iter(SPACES)

    def __len__(self) -> int:
        return len(SPACES)


SPACE_CONFIGS = _SpaceConfigs()


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite tracking + registry store under tmp_path (artifacts there too)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) lands in tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(
    url: str, proc: subprocess.Popen, timeout: float = 90.0, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200, or fail with the server's output (or ``log``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else log.read_text() if log else ""
            raise RuntimeError(f"server exited early ({proc.returncode}): {out[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


def start_mlflow_server(port: int, store: Path, output: Any = subprocess.PIPE) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:``port``, SQLite and artifacts under ``store``.

    ``output``: where its log goes (a pipe, read when it exits early, or an open file).
    """
    store.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a SQLite store; yields its http URI."""
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    log = store / "server.log"  # a file, not a pipe: a full pipe would stall a busy server
    proc = start_mlflow_server(port, store, output=log.open("w"))
    uri = f"http://127.0.0.1:{port}"
    previous = mlflow.get_tracking_uri()  # a module-scoped store's, restored afterwards
    try:
        wait_for_http(f"{uri}/health", proc, log=log)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)  # later tests must not talk to a stopped server
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate ``proc``; kill it if it has not gone after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def scoring_server(model_uri: str, log: Path, timeout: float = 180.0) -> Iterator[str]:
    """`mlflow models serve -m model_uri --env-manager local` on a free 127.0.0.1 port, its
    output in ``log``; yields ``http://127.0.0.1:<port>`` once /ping answers, stops it after.

    The scoring server execs ``uvicorn`` from PATH: this interpreter's bin goes first, as an
    activated virtual environment would put it (the README says so).
    """
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("w") as output:
        proc = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/ping", proc, timeout=timeout, log=log)
        yield url
    finally:
        stop_process(proc)
