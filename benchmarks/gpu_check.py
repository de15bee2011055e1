"""GPU check: the CUDA paths of the latency harness and the mixed-precision DHA step.

On a CUDA machine with PyTorch (no network needed; the data are scikit-learn's digits), in
well under 5 minutes:

1. versions, devices, ONNX Runtime providers, TensorRT status;
2. one DHA training step (Algorithm 1, mobilenet supernet) timed with and without bf16
   autocast and channels_last (issue 7);
3. a freshly derived model: a small supernet trained for a few DHA steps through
   ``dha_train.engine.trainer.train``, its child derived, counted and timed;
4. the reference architectures (proxylessnas_gpu, darts_v2 at 224 px) on the CUDA paths:
   torch eager fp32 / fp16 autocast / channels_last, ONNX Runtime's CUDA provider;
5. TensorRT engines (fp32, fp16) at batch 1 for all of them, when TensorRT is importable;
6. the ratio benchmarks of issues 3 and 4 on CUDA (supernet / child step, dha / nas step,
   on-device DA / PIL RandAugment) and the latency spread of issue 5 on this machine's
   CPU, each run as its own script.

Each section is guarded: a failure is printed and the rest still run (exit status 1 then).
Without CUDA it says so and exits 0; ``--cpu-smoke`` runs every section on the CPU with tiny
settings instead (to check the script itself).

    python benchmarks/gpu_check.py            # on the GPU machine
    python benchmarks/gpu_check.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dha_train.data import to_unit_float
from dha_train.timing import time_callable
from pipeline.latency import LatencyConfig, LatencyResult, describe_environment, measure_latency
from pipeline.measurement import measure_model, resolve_target
from pipeline.table5 import DEFAULT_REFERENCES, REFERENCE_MODELS

TORCH_ORT = (
    "torch",
    "torch_fp16",
    "torch_channels_last",
    "torch_fp16_channels_last",
    "onnxruntime",
)
TENSORRT = ("tensorrt", "tensorrt_fp16")


@dataclass(frozen=True)
class Settings:
    """Sizes and time bounds of one check."""

    device: str
    resolution: int  # references and the DHA step
    num_classes: int  # references
    batch_sizes: tuple[int, ...]
    timing: LatencyConfig
    train_resolution: int  # the freshly derived model
    train_batch: int
    train_steps: int
    step_iters: int  # timed DHA steps per configuration (after step_warmup untimed ones)
    step_warmup: int
    budget_s: float  # sections that would start after this are skipped
    threads: int | None = None  # CPU threads for torch and ONNX Runtime (None: torch's default)
    # benchmarks/<script> -> its arguments, after ``--device <device>`` (a later one wins)
    benchmarks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    benchmark_timeout_s: float = 120.0


GPU = Settings(
    device="cuda",
    resolution=224,
    num_classes=1000,
    batch_sizes=(1, 32),
    timing=LatencyConfig(warmup=10, min_iters=20, max_iters=2000, max_seconds=1.0),
    train_resolution=64,
    train_batch=64,
    train_steps=20,
    step_iters=10,
    step_warmup=3,
    budget_s=240.0,
    benchmarks={
        "bench_supernet_step.py": ("--batch", "64", "--rounds", "5"),
        "bench_dha_step.py": ("--channels", "16", "--layers", "8", "--batch", "64"),
        "bench_augment.py": ("--rounds", "3"),
        "bench_latency_spread.py": ("--device", "cpu", "--seconds", "5", "--pairs", "2"),
    },
)
CPU_SMOKE = Settings(
    device="cpu",
    resolution=32,
    num_classes=10,
    batch_sizes=(1, 2),
    timing=LatencyConfig(warmup=1, min_iters=2, max_iters=20, max_seconds=0.05),
    train_resolution=32,
    train_batch=8,
    train_steps=2,
    step_iters=2,
    step_warmup=1,
    budget_s=600.0,
    threads=1,  # a shared small CPU: more threads than idle cores is many times slower
    benchmarks={
        "bench_supernet_step.py": ("--batch", "4", "--rounds", "1"),
        "bench_dha_step.py": ("--batch", "4", "--rounds", "1", "--steps", "1"),
        "bench_augment.py": ("--rounds", "1", "--sizes", "32", "--images", "128", "--batch", "64"),
        "bench_latency_spread.py": (
            *("--device", "cpu", "--seconds", "0.2", "--pairs", "1"),
            *("--resolution", "32", "--num-classes", "10"),
        ),
    },
    benchmark_timeout_s=300.0,
)


@dataclass
class State:
    """What the sections share: the models measured so far and their results."""

    settings: Settings
    models: dict[str, tuple[nn.Module, int]] = field(default_factory=dict)  # name -> (model, R)
    counts: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (Mparams, MMACs)
    results: list[tuple[str, LatencyResult]] = field(default_factory=list)


@functools.cache
def _digits(resolution: int) -> Any:
    from dha_train.data import load_dataset

    return load_dataset("digits", None, resolution, seed=0)


def _train_config(s: Settings, resolution: int, batch: int, **overrides: Any) -> Any:
    from dha_train.spaces.base import SpaceConfig
    from dha_train.train_config import TrainConfig

    space = SpaceConfig("mobilenet", num_classes=10, resolution=resolution, width_mult=1.0)
    cfg = TrainConfig(space=space, mode="dha", batch_size=batch, device=s.device, progress=False)
    return replace(cfg, **overrides)


def section_versions(state: State) -> None:
    import onnxruntime as ort

    env = describe_environment()
    print(f"cpu: {env['cpu']} ({env['cpu_count']} cores), gpu: {env['gpu']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    print(f"onnxruntime providers: {ort.get_available_providers()}")
    try:
        from export.tensorrt_runtime import tensorrt_status

        print(f"tensorrt: {tensorrt_status()}")
    except ImportError as exc:
        print(f"tensorrt: export.tensorrt_runtime not importable ({exc})")


def section_dha_step(state: State) -> None:
    """One DHA step (Algorithm 1) with and without bf16 autocast / channels_last."""
    from dha_train.engine.phase import build_phase
    from dha_train.modes import MODES

    s = state.settings
    data = _digits(s.resolution)
    batch = s.train_batch
    x = to_unit_float(torch.stack([data.train[i][0] for i in range(batch)]).to(s.device))
    y = torch.tensor([int(data.train[i][1]) for i in range(batch)], device=s.device)
    base = None
    for amp, channels_last in ((False, False), (True, False), (False, True), (True, True)):
        cfg = _train_config(
            s, s.resolution, batch, amp=amp, channels_last=channels_last, warmup_fraction=0.0
        )
        run = build_phase(cfg, data, MODES["dha"][0], arch=None, phase_idx=0, phase_steps=1000)
        stats = time_callable(
            functools.partial(run.step, x, y),
            device=s.device,
            warmup=s.step_warmup,
            min_iters=s.step_iters,
            max_iters=s.step_iters,
        )
        base = base or stats.median_ms
        print(
            f"DHA step bs{batch} @{s.resolution}px amp(bf16)={amp!s:5} channels_last="
            f"{channels_last!s:5}: median {stats.median_ms:8.2f} ms  p90 {stats.p90_ms:8.2f}"
            f"  speed-up {base / stats.median_ms:5.2f}x"
        )


class _Sink:
    """The trainer's metrics sink, kept in memory (no MLflow in this check)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.update(metrics)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        pass  # architectures and histories are not needed here

    def log_figure(self, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(figure)


def section_derived(state: State) -> None:
    """Train a small supernet for a few DHA steps, derive the child, count and time it."""
    from dha_train.engine.trainer import train

    s = state.settings
    data = _digits(s.train_resolution)
    cfg = _train_config(
        s, s.train_resolution, s.train_batch, epochs=1, limit_steps_per_epoch=s.train_steps
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
        result = train(cfg, data, workdir=Path(workdir), sink=_Sink())
    print(f"derived after {s.train_steps} DHA steps: test {result.test}")
    _measure(state, "derived", result.model, s.train_resolution, num_classes=10)


def _measure(state: State, name: str, model: nn.Module, resolution: int, num_classes: int) -> None:
    s = state.settings
    report = measure_model(
        model,
        resolution=resolution,
        num_classes=num_classes,
        backends=TORCH_ORT,
        devices=(s.device,),
        batch_sizes=s.batch_sizes,
        threads=s.threads,
        timing=s.timing,
        name=name,
    )
    state.models[name] = (model, resolution)
    state.counts[name] = (report.params_m, report.flops_m)
    state.results += [(name, r) for r in report.latency]


def section_references(state: State) -> None:
    s = state.settings
    for name in DEFAULT_REFERENCES:
        target = resolve_target(
            REFERENCE_MODELS[name].target, num_classes=s.num_classes, resolution=s.resolution
        )
        _measure(state, name, target.model, target.resolution, s.num_classes)


def section_tensorrt(state: State) -> None:
    """TensorRT fp32 / fp16 engines at batch 1 for every model measured so far."""
    s = state.settings
    for name, (model, resolution) in state.models.items():
        results = measure_latency(
            model,
            input_shape=(3, resolution, resolution),
            backends=TENSORRT,
            devices=(s.device,),
            batch_sizes=(1,),
            threads=s.threads,
            config=s.timing,
        )
        state.results += [(name, r) for r in results]


def section_benchmarks(state: State) -> None:
    """The ratio benchmarks, each in its own process (their output printed as it is)."""
    s = state.settings
    failed = []
    for script, extra in s.benchmarks.items():
        command = [sys.executable, str(Path(__file__).with_name(script)), "--device", s.device]
        done = subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=s.benchmark_timeout_s
        )
        print(f"-- {script} {' '.join(extra)}\n{done.stdout.rstrip()}", flush=True)
        if done.returncode != 0:
            print(done.stderr[-2000:])
            failed.append(script)
    if failed:
        raise RuntimeError(f"benchmarks failed: {', '.join(failed)}")


SECTIONS: list[tuple[str, Callable[[State], None]]] = [
    ("versions", section_versions),
    ("DHA step: autocast / channels_last", section_dha_step),
    ("benchmarks (issues 3, 4 and 5)", section_benchmarks),
    ("freshly derived model", section_derived),
    ("reference architectures", section_references),
    ("TensorRT engines", section_tensorrt),
]


def print_table(state: State) -> None:
    print(f"\n{'model':18} {'params M':>8} {'MACs M':>8}")
    for name, (params, flops) in state.counts.items():
        print(f"{name:18} {params:8.2f} {flops:8.0f}")
    print(
        f"\n{'model':18} {'backend':26} {'dev':4} {'bs':>3} {'median ms':>10} {'p90 ms':>9}"
        f" {'img/s':>9}  status"
    )
    for name, r in state.results:
        t = r.timing
        numbers = (
            f"{t.median_ms:10.3f} {t.p90_ms:9.3f} {r.throughput_ips or 0:9.1f}"
            if t
            else f"{'-':>10} {'-':>9} {'-':>9}"
        )
        status = r.status if r.status == "ok" else f"{r.status}: {r.reason[:70]}"
        print(f"{name:18} {r.backend:26} {r.device:4} {r.batch_size:3d} {numbers}  {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="run every section on the CPU at tiny sizes"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(
            "CUDA absent (torch.cuda.is_available() is False): nothing to check on this machine;"
            " run this on a CUDA machine, or pass --cpu-smoke to dry-run the script on the CPU"
        )
        return 0
    state = State(CPU_SMOKE if args.cpu_smoke else GPU)
    if state.settings.threads is not None:
        torch.set_num_threads(state.settings.threads)
    start, failed = time.perf_counter(), []
    for title, section in SECTIONS:
        elapsed = time.perf_counter() - start
        print(f"\n== {title} (t={elapsed:.0f}s)", flush=True)
        if elapsed > state.settings.budget_s:
            print(f"skipped: past the {state.settings.budget_s:.0f} s budget")
            continue
        try:
            section(state)
        except Exception:  # one failing section must not hide the others' results
            traceback.print_exc()
            failed.append(title)
    print_table(state)
    total = time.perf_counter() - start
    print(f"\ndone in {total:.0f} s; failed sections: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
