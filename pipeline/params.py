"""Every parameter a user can pass, declared once and validated once, at the edge.

The table below drives the ``dha`` argument parsers, the ``MLproject`` file (a test checks
that it matches :func:`mlproject_yaml`) and the README's parameter table. A value that is
out of range, or a misspelt name, is a :class:`~dha_train.errors.ConfigError` with one line
that says what was given, what is allowed and, where it can, what was probably meant.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from dha_train.datasets import DATASETS, defaults_help
from dha_train.errors import ConfigError, check_choice, check_choices
from dha_train.modes import MODES
from dha_train.nas.options import FREEZE_RULES, WEIGHTINGS
from dha_train.spaces.registry import SPACES
from export.formats import FORMATS, PRECISIONS
from pipeline.backends import BACKEND_SPECS

__all__ = ["Param", "PARAMS", "STEP_PARAMS", "add_params", "parse_formats", "mlproject_yaml"]


@dataclass(frozen=True)
class Param:
    """One user-facing parameter."""

    name: str
    type: type
    default: Any
    help: str
    options: Collection[str] | None = None  # a registry (read live) or a fixed list
    minimum: float | None = None

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The allowed values now (a space registered at run time is one of them)."""
        return None if self.options is None else tuple(self.options)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: str) -> Any:
        """Turn the command-line string into a checked value (ConfigError if it isn't one)."""
        if raw in ("''", '""'):  # MLflow's Kubernetes backend passes an empty value shell-quoted
            raw = ""
        if self.type is bool:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{self.name}={raw!r} is not a boolean: use true or false")
            return lowered in ("true", "1", "yes")
        if self.type in (int, float):
            if self.type is float and raw.strip().lower() in ("", "none", "inf"):
                return None  # an unset budget
            try:
                value = self.type(raw)
            except ValueError:
                raise ConfigError(
                    f"{self.name}={raw!r} is not a{'n' if self.type is int else ''} "
                    f"{self.type.__name__}"
                ) from None
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(f"{self.name}={raw} is below its minimum {self.minimum:g}")
            return value
        if self.choices is not None:
            check_choice(raw, self.choices, self.name)
        return raw

    @property
    def mlflow_type(self) -> str:
        if self.default is None:
            return "string"  # '' = unset
        return {int: "int", float: "float"}.get(self.type, "string")


def _p(
    name: str,
    type_: type,
    default: Any,
    help_: str,
    choices: Collection[str] | None = None,
    minimum: float | None = None,
) -> Param:
    return Param(name, type_, default, help_, choices, minimum)


PARAMS: dict[str, Param] = {
    p.name: p
    for p in [
        # data
        _p(
            "dataset",
            str,
            "digits",
            "dataset to search and train on",
            DATASETS,
        ),
        _p("data_dir", str, "", "folder holding the dataset (not needed for digits)"),
        _p(
            "resolution",
            int,
            0,
            f"input side in px; 0 = the dataset's default ({defaults_help('resolution')})",
            minimum=0,
        ),
        _p("workers", int, 2, "DataLoader worker processes", minimum=0),
        # search space
        _p("space", str, "mobilenet", "search space", SPACES),
        _p(
            "width_mult",
            float,
            0.0,
            f"mobilenet width multiplier; 0 = default ({defaults_help('width_mult')})",
            minimum=0,
        ),
        _p(
            "init_channels",
            int,
            0,
            f"cell space: channels C; 0 = default ({defaults_help('init_channels')})",
            minimum=0,
        ),
        _p(
            "layers",
            int,
            0,
            f"cell space: number of cells; 0 = default ({defaults_help('layers')})",
            minimum=0,
        ),
        # method
        _p("mode", str, "dha", "what is searched jointly (paper Table 3)", MODES),
        _p(
            "epochs", int, 0, f"training epochs; 0 = default ({defaults_help('epochs')})", minimum=0
        ),
        _p("batch_size", int, 64, "training mini-batch (per process)", minimum=2),
        _p("seed", int, 0, "random seed (data split, initialisation, sampling)", minimum=0),
        # search settings (TrainConfig; the paper gives none of these values)
        _p(
            "tau_lr",
            float,
            0.0,
            "Adam learning rate of the DA policy tau; 0 = 5 / (steps of the phase)",
            minimum=0,
        ),
        _p("hyper_lr", float, 1e-4, "beta of Eq. 4: learning rate of lr and wd", minimum=0),
        _p("lr_min", float, 1e-3, "lower bound of the searched learning rate", minimum=0),
        _p("lr_max", float, 0.1, "upper bound of the searched learning rate", minimum=0),
        _p("wd_min", float, 0.0, "lower bound of the searched weight decay", minimum=0),
        _p("wd_max", float, 1e-2, "upper bound of the searched weight decay", minimum=0),
        _p(
            "freeze_rule",
            str,
            "window",
            "when a unit's architecture is fixed: window = alpha moved < 5% over 50 steps once "
            "validation top-1 is clearly above chance; ista = ISTA-NAS's per-epoch rule",
            FREEZE_RULES,
        ),
        _p(
            "arch_weighting",
            str,
            "l1",
            "forward weights of selected ops: l1 = |alpha|/||alpha||_1, alpha = paper's |alpha|",
            WEIGHTINGS,
        ),
        _p(
            "architecture",
            str,
            "",
            "train this fixed network instead of searching one: an architecture JSON file, or a "
            "search_train run id (its child's); needs mode da_hpo or baseline ('' = none)",
        ),
        _p("nproc", int, 1, "processes for search_train (torchrun, one per GPU)", minimum=1),
        # budgets (Eq. 1)
        _p(
            "max_flops_m",
            float,
            None,
            "budget: multiply-adds in millions (unset = none)",
            minimum=0,
        ),
        _p("max_params_m", float, None, "budget: parameters in millions (unset = none)", minimum=0),
        _p(
            "max_latency_ms",
            float,
            None,
            "budget: batch-1 latency on target_device in ms (unset = none)",
            minimum=0,
        ),
        _p(
            "target_device",
            str,
            "cpu",
            "device that training, latency budget and measurement use",
            ["cpu", "cuda"],
        ),
        # deployment
        _p(
            "formats",
            str,
            "onnx,tensorrt",
            "comma-separated formats to export and register "
            "(tensorrt is skipped with a reason where TensorRT or CUDA is absent, unless alone)",
        ),
        _p("precision", str, "fp32", "precision of the exported engines", PRECISIONS),
        _p("model_name", str, "", "registered model name prefix; '' = dha-<space>-<dataset>"),
        _p(
            "min_top1",
            float,
            0.0,
            "validation top-1 (%) a version needs to become champion; 0 = twice chance "
            "(200/classes)",
            minimum=0,
        ),
        _p("reuse", bool, True, "reuse a FINISHED step run with the same parameters and code"),
        # step plumbing (URIs between steps)
        _p("search_run_id", str, "", "run id of a finished search_train step"),
        _p("export_run_id", str, "", "run id of a finished export step"),
        _p("measure_run_id", str, "", "run id of a finished measure step"),
        _p(
            "backends",
            str,
            "torch,onnxruntime",
            f"latency backends Table 5 times, comma-separated ({', '.join(BACKEND_SPECS)}; "
            "'' = none)",
        ),
        _p(
            "references",
            str,
            "proxylessnas_gpu,darts_v2",
            "reference architectures measured beside the derived model in Table 5 ('' = none)",
        ),
        _p("experiment", str, "", "compare: experiment name ('' = the active one)"),
        _p("run_ids", str, "", "compare: comma-separated run ids"),
        _p("registered_model", str, "", "compare: the versions of this registered model"),
    ]
}

_DATA = ["dataset", "data_dir", "resolution", "workers", "seed"]
_SPACE = ["space", "width_mult", "init_channels", "layers"]
_BUDGET = ["max_flops_m", "max_params_m", "max_latency_ms", "target_device"]
_SEARCH = ["tau_lr", "hyper_lr", "lr_min", "lr_max", "wd_min", "wd_max", "freeze_rule"]
_SEARCH += ["arch_weighting", "architecture"]

STEP_PARAMS: dict[str, list[str]] = {
    "main": _DATA
    + _SPACE
    + ["mode", "epochs", "batch_size", "nproc"]
    + _SEARCH
    + _BUDGET
    + ["formats", "precision", "model_name", "min_top1", "references", "backends", "reuse"],
    "search_train": _DATA + _SPACE + ["mode", "epochs", "batch_size", "nproc"] + _SEARCH + _BUDGET,
    "measure": ["search_run_id", "target_device", "references", "backends", "batch_size"],
    "export": ["search_run_id", "formats", "precision", "target_device"],
    "register": ["export_run_id", "measure_run_id", "model_name", "min_top1"],
    "compare": ["experiment", "run_ids", "registered_model"],
}


def add_params(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Add the parameters ``names`` to ``parser`` as ``--flag value`` options."""
    for name in names:
        p = PARAMS[name]
        default = (
            ""
            if p.default is None
            else str(p.default).lower()
            if p.type is bool
            else str(p.default)
        )
        extra = f" {{{','.join(p.choices)}}}" if p.choices else ""
        parser.add_argument(
            p.flag,
            dest=p.name,
            default=default,
            metavar=p.type.__name__.upper(),
            # argparse %-formats help strings: a literal % (as in "5%") must be doubled
            help=f"{p.help}{extra} (default: {default or 'unset'})".replace("%", "%%"),
        )


def parse_values(namespace: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """Checked values of ``names`` from a parsed namespace (ConfigError on the first bad one)."""
    return {name: PARAMS[name].parse(str(getattr(namespace, name))) for name in names}


def parse_formats(raw: str) -> tuple[str, ...]:
    """'onnx,tensorrt' -> ('onnx', 'tensorrt'), checked."""
    formats = check_choices(raw, list(FORMATS), "format")
    if not formats:
        raise ConfigError(f"formats is empty: pass one or more of {', '.join(FORMATS)}")
    return formats


# the dha subcommand of a step whose command is not its name with "-" for "_"
COMMANDS: dict[str, str] = {"main": "run"}


def mlproject_yaml() -> str:
    """The MLproject file's text, generated from the tables above."""
    lines = ["name: dha", "", "conda_env: conda.yaml", "", "entry_points:"]
    for step, names in STEP_PARAMS.items():
        command = COMMANDS.get(step, step.replace("_", "-"))
        lines += [f"  {step}:", "    parameters:"]
        for name in names:
            p = PARAMS[name]
            default = (
                "" if p.default is None else str(p.default).lower() if p.type is bool else p.default
            )
            lines.append(
                f"      {name}: {{type: {p.mlflow_type}, default: {_yaml_scalar(default)}}}"
            )
        args = " ".join(f"{PARAMS[n].flag} {{{n}}}" for n in names)
        lines.append(f'    command: "dha {command} {args}"')
    return "\n".join(lines) + "\n"


def _yaml_scalar(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)
