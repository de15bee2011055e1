"""Load on the served model: `mlflow models serve` on 127.0.0.1 under a bounded load.

For each model URI (by default the registered ONNX and TensorRT champions of the default run;
one that is not registered, or cannot be served here, is skipped with its reason) it starts
`mlflow models serve -m <uri> --env-manager local` on a free loopback port, sends
``--requests`` POST /invocations from ``--clients`` concurrent clients (one keep-alive
connection each) for every batch size in ``--batches``, and stops the server. A request
counts as an error unless the answer is HTTP 200 with the served schema (export/serving.py:
logits, probabilities, label, class_names) and one label per image. It prints, per model and
batch size: requests, errors, throughput (requests/s and images/s), p50 and p99 latency.
Exits 1 when any request failed.

    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db python benchmarks/bench_serve.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np

DEFAULT_MODELS = (
    "models:/dha-mobilenet-digits-onnx@champion",
    "models:/dha-mobilenet-digits-tensorrt@champion",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _input_shape(uri: str) -> tuple[int, ...]:
    """(3, R, R) from the model's signature (its one tensor input, batch axis dropped)."""
    signature = mlflow.models.get_model_info(uri).signature
    if signature is None or signature.inputs is None:
        raise ValueError(f"{uri} has no input signature")
    (spec,) = signature.inputs.inputs
    return tuple(int(d) for d in spec.shape[1:])  # type: ignore[union-attr]


class Server:
    """`mlflow models serve` for one URI on a free 127.0.0.1 port, its log in a file."""

    def __init__(self, uri: str, workers: int, log: Path) -> None:
        self.port = _free_port()
        bin_dir = os.path.dirname(sys.executable)  # the server execs uvicorn from PATH
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.log = log
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri]
        cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)]
        cmd += ["-w", str(workers)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-1500:]
                raise RuntimeError(f"server exited ({self.proc.returncode}): {tail}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server did not answer /ping in {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_OUTPUTS = {"logits", "probabilities", "label", "class_names"}  # export.serving.OUTPUT_SCHEMA


def _answer_problem(payload: bytes, rows: int) -> str | None:
    """Why a 200 reply is not the served schema with ``rows`` labels (None if it is)."""
    predictions = json.loads(payload).get("predictions")
    if not isinstance(predictions, dict) or set(predictions) != _OUTPUTS:
        return f"reply without the served outputs {sorted(_OUTPUTS)}: {payload[:120]!r}"
    if len(predictions["label"]) != rows:
        return f"{len(predictions['label'])} labels for {rows} images"
    return None


def _load(port: int, body: bytes, rows: int, requests: int, clients: int, timeout: float) -> dict:
    """Send ``requests`` POSTs from ``clients`` threads; latencies (s) and error count."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]

    def take() -> bool:
        with lock:
            if remaining[0] == 0:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        while take():
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status == 200:
                    problem = _answer_problem(payload, rows)
                else:
                    problem = f"HTTP {response.status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            elapsed = time.perf_counter() - start
            with lock:
                if problem is None:
                    latencies.append(elapsed)
                else:
                    errors.append(problem)
        conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return {"wall_s": time.perf_counter() - start, "latencies": latencies, "errors": errors}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--requests", type=int, default=2000, help="per batch size")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--log-dir", type=Path, default=Path("outputs") / "bench_serve")
    args = parser.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    print(f"tracking store {mlflow.get_tracking_uri()}; {args.requests} requests per batch size, "
          f"{args.clients} clients, {args.workers} server worker(s)")  # fmt: skip
    header = f"{'model':48s} {'batch':>5s} {'requests':>8s} {'errors':>6s} {'req/s':>7s} "
    print(header + f"{'img/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}")
    failed = 0
    rng = np.random.default_rng(0)
    for uri in args.models:
        try:
            shape = _input_shape(uri)
        except Exception as exc:  # not registered here, or not a model with a signature
            print(f"{uri:48s} skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        server = Server(uri, args.workers, args.log_dir / f"{uri.replace('/', '_')}.log")
        try:
            server.wait_ready(timeout=180)
        except (RuntimeError, TimeoutError) as exc:
            server.stop()
            print(f"{uri:48s} skipped: cannot be served here ({str(exc).splitlines()[-1][:120]})")
            continue
        try:
            for batch in args.batches:
                images = rng.random((batch, *shape), dtype=np.float32)
                body = json.dumps({"inputs": images.tolist()}).encode()
                out = _load(server.port, body, batch, args.requests, args.clients, args.timeout)
                lat, errors = out["latencies"], out["errors"]
                failed += len(errors)
                rate = len(lat) / out["wall_s"]
                print(
                    f"{uri:48s} {batch:5d} {args.requests:8d} {len(errors):6d} {rate:7.1f} "
                    f"{rate * batch:8.1f} {1e3 * _percentile(lat, 50):8.1f} "
                    f"{1e3 * _percentile(lat, 99):8.1f}",
                    flush=True,
                )
                for problem in sorted(set(errors))[:3]:
                    print(f"  error: {problem}")
        finally:
            server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
