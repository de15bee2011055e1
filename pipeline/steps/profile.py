"""profile: params, multiply-adds and latency of one architecture, on this machine.

A named architecture (proxylessnas_gpu, darts_v2), ``torchvision:<name>`` or an
architecture JSON (``--weights`` for its state dict), built at ``--resolution`` px for
``--num-classes`` classes, counted with fvcore and timed with each ``--backends`` entry on
``--device`` at batch 1 and ``--batch-size``. Prints a report (``--json``: one JSON object,
schema in pipeline/measurement.py) and logs nothing; the pipeline's measure step times the
derived child (and these references) into its run's Table 5.

Example: dha profile --arch proxylessnas_gpu --resolution 224 --num-classes 1000 --json
"""

from __future__ import annotations

import argparse

from dha_train.errors import ConfigError
from pipeline.backends import BACKEND_SPECS, parse_backends
from pipeline.latency import DEVICES, LatencyConfig
from pipeline.measurement import MeasureReport, measure_target, resolve_target

__all__ = ["add_arguments", "run"]

DRIFT_FLAG_PCT = 10.0  # a timing whose chunk medians moved more than this is flagged as noisy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        required=True,
        help="named architecture, torchvision:<name> or an architecture JSON path",
    )
    parser.add_argument("--weights", default=None, help="state dict for --arch JSON")
    parser.add_argument(
        "--resolution", type=int, default=224, help="input side in px (default 224)"
    )
    parser.add_argument("--num-classes", type=int, default=1000, help="classes (default 1000)")
    parser.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help=f"comma-separated subset of {','.join(BACKEND_SPECS)}; '' = no timing "
        "(default: torch,onnxruntime)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=DEVICES, help="where to time (default cpu)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="the larger batch timed (default 64)"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument(
        "--max-seconds", type=float, default=2.0, help="time bound per configuration (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _describe(report: MeasureReport) -> str:
    lines = [
        f"{report.name}: {report.params_m:.3f} M params, {report.flops_m:.1f} M multiply-adds "
        f"at {report.resolution} px"
    ]
    if report.unsupported_operators:
        lines.append(f"  not counted by fvcore: {report.unsupported_operators}")
    for r in report.latency:
        if r.timing is None:
            lines.append(f"  {r.key}: {r.status} ({r.reason})")
        else:
            drift = r.timing.drift_pct
            noisy = (
                f"; drift {drift:.0f}%: the machine's speed changed while timing, rerun with "
                "--threads 1 --max-seconds 20"
                if drift > DRIFT_FLAG_PCT
                else ""
            )
            lines.append(
                f"  {r.key}: median {r.timing.median_ms:.2f} ms, p90 {r.timing.p90_ms:.2f} ms, "
                f"{r.throughput_ips:.0f} img/s{noisy}"
            )
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> None:
    """Flags of a standalone measurement that no measurement could use."""
    for flag, value, least in (
        ("--resolution", args.resolution, 8),
        ("--num-classes", args.num_classes, 1),
        ("--threads", args.threads, 1),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{flag} {value}: must be at least {least}")
    if args.max_seconds <= 0:
        raise ConfigError(f"--max-seconds {args.max_seconds}: give a time bound above 0 s")
    if args.weights and not args.arch.endswith(".json"):
        raise ConfigError("--weights goes with an architecture JSON: --arch <arch.json>")


def _all_skipped(report: MeasureReport) -> None:
    """A UserError when timings were asked for and none could run here."""
    if report.latency and all(r.timing is None for r in report.latency):
        reasons = "; ".join(f"{r.key}: {r.reason}" for r in report.latency[:3])
        raise ConfigError(
            f"no timing could run on this machine ({reasons}): choose --backends and "
            "--device that it has"
        )


def run(args: argparse.Namespace) -> None:
    _check(args)
    target = resolve_target(
        args.arch, num_classes=args.num_classes, resolution=args.resolution, weights=args.weights
    )
    report = measure_target(
        target,
        backends=parse_backends(args.backends),
        devices=(args.device,),
        batch_sizes=(1, args.batch_size),
        threads=args.threads,
        timing=LatencyConfig(max_seconds=args.max_seconds),
    )
    print(report.to_json() if args.json else _describe(report), flush=True)
    _all_skipped(report)
