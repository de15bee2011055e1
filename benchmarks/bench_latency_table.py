"""Prediction error of the budgets' latency table against whole networks, one runtime.

Goal (issue 12.2): on this CPU, through ONNX Runtime, the additive table predicts the
batch-1 latency of the default digits mobilenet child within 15%. Builds the table afresh
(a temporary cache) for the digits default configuration (16 px, width 0.35, 10 classes),
then for the baseline child, the table's fastest child and ``--random`` random children
prints the prediction, a measurement of the whole network through the same runtime
(:meth:`CostModel.latency_check`) and the relative error, and the median and largest error.
``--child`` adds an architecture JSON (e.g. a run's ``child/architecture.json``). The load
average before and after is printed with the figures (a shared host moves them). Exits 0
either way, unless --strict.

    python benchmarks/bench_latency_table.py --runtime onnxruntime --random 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dha_train.nas.cost_model import CostModel
from dha_train.nas.latency_runtimes import LATENCY_RUNTIMES
from dha_train.spaces import baseline_architecture, build_supernet
from dha_train.spaces.arch import architecture_from_dict
from dha_train.spaces.base import SpaceConfig

GOAL = 0.15


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="onnxruntime", choices=sorted(LATENCY_RUNTIMES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    parser.add_argument("--random", type=int, default=8, help="random children to check")
    parser.add_argument("--child", type=Path, action="append", default=[])
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = SpaceConfig("mobilenet", 10, 16, width_mult=0.35)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        model = CostModel(build_supernet(cfg), latency_device=args.device,
                          latency_runtime=args.runtime, cache_dir=cache)  # fmt: skip
        built = time.perf_counter() - start
        print(
            f"{args.runtime} on {args.device}, {torch.get_num_threads()} threads: table built "
            f"in {built:.1f} s, fixed {model.fixed[2]:.4f} ms, per call "
            f"{model.call_overhead_ms:.4f} ms; load average {load:.2f}"
        )
        rng = np.random.default_rng(1)
        net = model.supernet
        children = {
            "baseline": baseline_architecture(cfg),
            "fastest": model.cheapest_architecture(),
        }
        for i in range(args.random):
            support = tuple((int(rng.integers(n)),) for n in net.unit_sizes)
            children[f"random{i}"] = net.architecture(support)
        for path in args.child:
            children[path.name] = architecture_from_dict(json.loads(path.read_text()))
        errors = []
        for name, arch in children.items():
            check = model.latency_check(arch)
            errors.append(check.relative_error)
            print(
                f"  {name:>10}: table {check.predicted_ms:.4f} ms, measured "
                f"{check.measured_ms:.4f} ms, error {100 * check.relative_error:5.1f}%"
            )
    median = statistics.median(errors)
    print(
        f"median error {100 * median:.1f}%, largest {100 * max(errors):.1f}% "
        f"(goal {100 * GOAL:.0f}%); load average now {os.getloadavg()[0]:.2f}"
    )
    return 1 if args.strict and median > GOAL else 0


if __name__ == "__main__":
    sys.exit(main())
