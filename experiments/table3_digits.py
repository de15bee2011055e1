"""The paper's Table 3 ablation on digits: what each part of DHA buys, at equal epochs and budget.

Runs every mode of :data:`dha_train.modes.MODES` that the table compares (``dha``, ``sequential``,
``nas``, ``nas_da``, ``nas_hpo``, ``sequential_da``, ``sequential_hpo``, ``baseline``), plus
``random`` (a random budget-feasible architecture of the same space, trained as a fixed child
with the same DA and HPO as ``dha``: mode ``da_hpo``) and ``dha_alpha`` (``dha`` with the
paper's |alpha| forward weights instead of the default L1-normalised ones), over several seeds,
on the full training split and on a low-data split (a fraction of the training images, where
augmentation should matter more). The low-data split gets more epochs so that both splits take
the same number of steps. Writes a markdown table (and the raw JSON) with test top-1 mean and
std, params, FLOPs, KL(p(tau) || uniform), the final lr and wd, and how many decision units
agree between seeds beside the agreement that chance gives.

Two diagnostic rows separate the size and the training of ``dha`` from its choice; each takes
the ``dha`` child of the same split and seed, so they run in a second phase after ``dha``
(which ``--rows`` gains when they are asked for without it): ``dha_fixed`` trains that child
from scratch as a fixed network like ``random`` (mode ``da_hpo``), and ``random_matched``
trains the architecture ``random`` would draw, projected onto a params budget equal to that
child's params (same size as dha's choice), the same way.

    python experiments/table3_digits.py                     # the study (tens of minutes)
    python experiments/table3_digits.py --smoke             # about a minute: tiny settings

Each finished run is appended to ``<out>/runs.jsonl`` at once; started again with the same
settings, the study reuses those runs and trains only the rest (``--fresh`` runs all again).

Not part of CI; ``tests/test_experiments.py`` runs the smoke version.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dha_train.da.policy import policy_stats  # noqa: E402
from dha_train.data import DataBundle, load_dataset  # noqa: E402
from dha_train.engine.trainer import train  # noqa: E402
from dha_train.nas.budgets import Budget, project_support  # noqa: E402
from dha_train.nas.cost_model import CostModel  # noqa: E402
from dha_train.nas.counting import count_flops, count_params  # noqa: E402
from dha_train.nas.ista import top_k_support  # noqa: E402
from dha_train.spaces import build_supernet  # noqa: E402
from dha_train.spaces.arch import architecture_from_dict  # noqa: E402
from dha_train.spaces.base import SpaceConfig  # noqa: E402
from dha_train.train_config import TrainConfig  # noqa: E402

ROWS = (
    "dha",
    "dha_alpha",
    "sequential",
    "nas",
    "nas_da",
    "nas_hpo",
    "sequential_da",
    "sequential_hpo",
    "random",
    "dha_fixed",
    "random_matched",
    "baseline",
)
# rows trained in a second phase from the dha result of the same (split, seed); all da_hpo
DERIVED = ("dha_fixed", "random_matched")
MODE_OF_ROW = {"random": "da_hpo", "dha_alpha": "dha"} | dict.fromkeys(DERIVED, "da_hpo")
# what a job says (a result holds these and its figures)
JOB_KEYS = ("row", "seed", "split", "fraction", "epochs", "batch_size", "max_params_m",
            "limit_steps")  # fmt: skip
RESOLUTION, WIDTH = 16, 0.35  # the default run's digits setting


class _NullSink:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_dict(self, data: dict[str, Any], name: str) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...


def _space(data: DataBundle) -> SpaceConfig:
    return SpaceConfig("mobilenet", data.num_classes, RESOLUTION, width_mult=WIDTH)


def random_architecture(space: SpaceConfig, budget: Budget, seed: int) -> Any:
    """A uniformly random support of the space, projected onto the budget as the search does."""
    net = build_supernet(space)
    model = CostModel(net)
    gen = torch.Generator().manual_seed(10_007 + seed)
    scores = torch.rand(net.num_units(), max(net.unit_sizes), generator=gen, dtype=torch.float64)
    for u, n in enumerate(net.unit_sizes):
        scores[u, n:] = 0
    proposed = top_k_support(scores, net.unit_sizes, net.unit_topk)
    rows = [row[:n] for row, n in zip(scores.numpy(), net.unit_sizes, strict=True)]
    support = project_support(proposed, rows, model, budget.limits(), [False] * net.num_units())
    return net.architecture(support if support is not None else model.check_budget(budget))


def _subset(data: DataBundle, fraction: float, seed: int) -> DataBundle:
    if fraction >= 1.0:
        return data
    n = len(data.train)
    idx = random.Random(seed).sample(range(n), max(1, int(fraction * n)))
    return dataclasses.replace(data, train=Subset(data.train, sorted(idx)))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (row, split, seed) and return its figures."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    row, seed = job["row"], job["seed"]
    data = _subset(load_dataset("digits", None, RESOLUTION, seed), job["fraction"], seed)
    space = _space(data)
    budget = Budget(max_params_m=job["max_params_m"])
    extra: dict[str, Any] = {}
    mode = MODE_OF_ROW.get(row, row)
    if row in ("random", "random_matched"):  # random_matched: max_params_m is dha's params
        extra["architecture"] = random_architecture(space, budget, seed)
    if row == "dha_fixed":
        extra["architecture"] = architecture_from_dict(job["architecture"])
    if row == "dha_alpha":
        extra["arch_weighting"] = "alpha"
    cfg = TrainConfig(
        space=space,
        mode=mode,
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        seed=seed,
        budget=budget,
        progress=False,
        checkpoint_every_steps=0,
        limit_steps_per_epoch=job["limit_steps"],
        **extra,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        result = train(cfg, data, workdir=Path(workdir), sink=_NullSink())
    shape = (1, 3, RESOLUTION, RESOLUTION)
    kl = None
    if result.tau_probs is not None:
        kl = policy_stats(torch.tensor(result.tau_probs))["tau_kl_uniform"]
    return {
        **job,
        "top1": result.test["top1"],
        "params_m": count_params(result.model) / 1e6,
        "flops_m": count_flops(result.model, shape).total / 1e6,
        "kl": kl,
        "lr": result.lr_trajectory[-1][1] if result.lr_trajectory else cfg.lr,
        "wd": result.wd_trajectory[-1][1] if result.wd_trajectory else cfg.wd,
        "blocks": list(result.architecture.blocks),
        "architecture": result.architecture.to_dict(),
        "first_freeze": next((e for h in result.history for e in h.get("freeze_events", [])), None),
        "seconds": time.perf_counter() - start,
    }


def derived_jobs(rows: list[str], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Phase 2: one job per derived row and dha result, taking that (split, seed)'s child:
    ``dha_fixed`` its architecture, ``random_matched`` its params as the budget."""
    jobs = []
    for dha in (r for r in results if r["row"] == "dha"):
        base = {k: dha[k] for k in JOB_KEYS}
        for row in (r for r in rows if r in DERIVED):
            job = base | {"row": row}
            if row == "dha_fixed":
                job["architecture"] = dha["architecture"]
            else:
                job["max_params_m"] = dha["params_m"]
            jobs.append(job)
    return jobs


def _key(job: dict[str, Any]) -> str:
    return json.dumps(job, sort_keys=True)


def finished_runs(log: Path) -> dict[str, dict[str, Any]]:
    """The results already in ``log`` (one JSON line per finished run), by their job."""
    if not log.exists():
        return {}
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {_key(line["job"]): line["result"] for line in lines}


def run_jobs(jobs: list[dict[str, Any]], processes: int, log: Path) -> list[dict[str, Any]]:
    """Run ``jobs`` (side by side when ``processes`` > 1), printing each as it finishes and
    appending it to ``log``; a job whose result ``log`` already holds is not run again."""
    finished = finished_runs(log)
    results = [finished[_key(j)] for j in jobs if _key(j) in finished]
    todo = [j for j in jobs if _key(j) not in finished]
    if results:
        print(f"{len(results)} of {len(jobs)} runs already finished in {log}", flush=True)
    with contextlib.ExitStack() as stack:
        done: Iterator[tuple[dict[str, Any], dict[str, Any]]] = map(_run_keeping_job, todo)
        if processes > 1 and len(todo) > 1:
            pool = stack.enter_context(get_context("spawn").Pool(processes))
            done = pool.imap_unordered(_run_keeping_job, todo)
        for i, (job, res) in enumerate(done, len(results) + 1):
            results.append(res)
            with log.open("a") as f:
                f.write(json.dumps({"job": job, "result": res}, default=str) + "\n")
            what = f"{res['split']} {res['row']} seed {res['seed']}"
            took = f"{res['seconds'] / 60:.1f} min"
            print(f"[{i}/{len(jobs)}] {what}: top-1 {res['top1']:.1f}% ({took})", flush=True)
    return results


def _run_keeping_job(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return job, run_one(job)


def agreement(blocks: list[list[str]]) -> float | None:
    """Mean number of units on which two seeds chose the same candidate."""
    pairs = list(itertools.combinations(blocks, 2))
    if not pairs:
        return None
    return statistics.mean(sum(a == b for a, b in zip(x, y, strict=True)) for x, y in pairs)


def chance_agreement(space: SpaceConfig) -> float:
    """Expected agreement of two uniformly random architectures: sum over units of 1 / n."""
    return sum(1.0 / n for n in build_supernet(space).unit_sizes)


def _fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(results: list[dict[str, Any]], chance: float, units: int) -> str:
    head = "| split | row | test top-1 (%) | params (M) | FLOPs (M) | KL(p(tau)‖U) | final lr |"
    head += " final wd | units agreeing between seeds |"
    lines = [head, "|" + "---|" * 9]
    for split in dict.fromkeys(r["split"] for r in results):
        for row in dict.fromkeys(r["row"] for r in results):
            rs = [r for r in results if r["split"] == split and r["row"] == row]
            if not rs:
                continue
            kls = [r["kl"] for r in rs if r["kl"] is not None]
            agree = agreement([r["blocks"] for r in rs])
            agree_text = "-" if agree is None else f"{agree:.1f} / {units} (chance {chance:.1f})"
            lines.append(
                f"| {split} | {row} | {_fmt([r['top1'] for r in rs])} "
                f"| {_fmt([r['params_m'] for r in rs], 3)} | {_fmt([r['flops_m'] for r in rs])} "
                f"| {_fmt(kls, 3) if kls else '-'} | {_fmt([r['lr'] for r in rs], 4)} "
                f"| {_fmt([r['wd'] for r in rs], 5)} | {agree_text} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    parser.add_argument("--epochs", type=int, default=8, help="epochs on the full split")
    parser.add_argument("--low-fraction", type=float, default=0.2, help="low-data split size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-params-m", type=float, default=0.4, help="the budget of every row")
    parser.add_argument("--processes", type=int, default=2, help="runs side by side")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "table3_digits")
    parser.add_argument("--smoke", action="store_true", help="tiny settings (CI)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="run every job again (by default the runs already in <out>/runs.jsonl, with the "
        "same settings, are reused: an interrupted study resumes where it stopped)",
    )
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if any(r in DERIVED for r in rows) and "dha" not in rows:
        print(f"--rows: {', '.join(DERIVED)} need dha's child; adding dha", file=sys.stderr)
        rows.insert(0, "dha")
    seeds = [int(s) for s in args.seeds.split(",")]
    limit = 2 if args.smoke else None
    epochs = 2 if args.smoke else args.epochs
    # the low-data split takes 1/fraction more epochs: both splits run as many steps
    splits = {"full": (1.0, epochs), "low": (args.low_fraction, round(epochs / args.low_fraction))}
    if args.smoke:
        splits = {"full": (1.0, epochs), "low": (args.low_fraction, epochs)}
    jobs = [
        {"row": r, "seed": s, "split": name, "fraction": frac, "epochs": ep,
         "batch_size": args.batch_size, "max_params_m": args.max_params_m, "limit_steps": limit}
        for name, (frac, ep) in splits.items() for r in rows if r not in DERIVED for s in seeds
    ]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    if args.fresh:
        log.unlink(missing_ok=True)
    start = time.perf_counter()
    results = run_jobs(jobs, args.processes, log)
    results += run_jobs(derived_jobs(rows, results), args.processes, log)
    results.sort(key=lambda r: (list(splits).index(r["split"]), rows.index(r["row"]), r["seed"]))
    wall = time.perf_counter() - start
    data = load_dataset("digits", None, RESOLUTION, 0)
    space = _space(data)
    text = table(results, chance_agreement(space), len(build_supernet(space).unit_sizes))
    (args.out / "table3_digits.md").write_text(text)
    (args.out / "table3_digits.json").write_text(
        json.dumps(
            {"wall_seconds": wall, "args": vars(args) | {"out": str(args.out)}, "results": results},
            indent=1,
            default=str,
        )  # fmt: skip
    )
    print(text)
    print(f"wall time {wall / 60:.1f} min; written to {args.out}")


if __name__ == "__main__":
    main()
