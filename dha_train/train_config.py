"""TrainConfig: every setting of a training run besides the data, with its validation.

The defaults follow the paper and ISTA-NAS (Sec. 4 and App. A); deviations are commented
where they are set (and listed in the README).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from dha_train.errors import ConfigError, check_choice
from dha_train.hpo import HyperBounds
from dha_train.modes import MODES
from dha_train.nas.budgets import Budget
from dha_train.nas.latency_runtimes import LATENCY_RUNTIMES
from dha_train.nas.options import FREEZE_RULES, WEIGHTINGS
from dha_train.spaces.base import SpaceConfig

if TYPE_CHECKING:
    from dha_train.spaces.arch import Architecture

__all__ = ["TrainConfig", "HPO_BATCHES"]

HPO_BATCHES = ("next", "separate")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``train`` needs besides the data; frozen, and validated when built
    (``dataclasses.replace`` validates the new one too)."""

    space: SpaceConfig
    mode: str = "dha"
    epochs: int = 50
    batch_size: int = 64
    seed: int = 0
    # weights' optimizer (Eq. 3) and the hyper-parameters eta (Eq. 4)
    lr: float = 0.025
    wd: float = 3e-4
    momentum: float = 0.9
    lr_bounds: tuple[float, float] = (1e-3, 0.1)
    wd_bounds: tuple[float, float] = (0.0, 1e-2)
    hyper_lr: float = 1e-4  # beta in Eq. 4
    hpo_batch: str = "next"  # "next" (deviation, cheap) | "separate" (Algorithm 1 line 9)
    grad_clip: float = 5.0
    # DA policy tau (Eq. 2) and the fixed standard augmentation. The paper gives no tau
    # learning rate; None = ``tau_travel / steps`` of the phase (Adam moves a logit by at most
    # about lr per step, so tau can travel ~tau_travel nats in any run length), and tau_clip
    # bounds the logits (the guard against collapse, see policy.py).
    tau_lr: float | None = None
    tau_travel: float = 5.0
    tau_clip: float = 1.0
    hflip: bool = True
    # architecture parameters b (ISTA-NAS one-stage settings)
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_wd: float = 1e-3
    # forward weights of the selected ops (search.forward_weights): "l1" | "alpha" (paper)
    arch_weighting: str = "l1"
    # weight-only warm-up on uniformly random paths, as a fraction of a search phase's steps
    warmup_fraction: float = 0.2
    # freezing (search.py): "window" (alpha's relative movement over freeze_window steps, and
    # only once validation top-1 is above chance by freeze_margin of the way to 100%) or
    # "ista" (ISTA-NAS: ||x_new - x_last_epoch|| <= 1e-3 per epoch)
    freeze_rule: str = "window"
    freeze_window: int = 50
    freeze_rel_tol: float = 0.05
    freeze_margin: float = 0.25
    budget: Budget | None = None  # None = unbounded
    # the network of phases that do not search and follow no search (None = the baseline)
    architecture: Architecture | None = None
    latency_device: str | None = None  # where a latency budget is measured (None = device)
    # what times the latency table: a name in nas.latency_runtimes.LATENCY_RUNTIMES ("torch",
    # "onnxruntime", "tensorrt"); None = the deployment runtime of the latency device
    latency_runtime: str | None = None
    sequential_search_fraction: float = 0.5
    # Units still moving after this fraction of a search phase's epochs freeze at their current
    # support, so the last epochs train the fixed child (what one-stage ISTA-NAS does once all
    # units have frozen by its criterion); the derived child is then exactly the trained net.
    # The deadline waits for the accuracy gate (engine.freezing), at most to the last epoch.
    freeze_by: float = 0.75
    # execution
    device: str = "cpu"
    workers: int = 0
    amp: bool | None = None  # bf16 autocast; None = on for CUDA, off on CPU
    channels_last: bool | None = None  # None = on for CUDA
    checkpoint_every_steps: int = 200  # 0 = only at epoch ends
    log_every_steps: int = 20
    limit_steps_per_epoch: int | None = None  # tiny runs / tests
    progress: bool = True
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values out of range."""
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.hpo_batch not in HPO_BATCHES:
            raise ConfigError(f"hpo_batch={self.hpo_batch!r}; expected one of {HPO_BATCHES}")
        for name in ("epochs", "batch_size", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}; expected an integer >= 1")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"rank={self.rank} with world_size={self.world_size}; need 0<=rank<ws"
            )
        if not 0.0 < self.freeze_by <= 1.0:
            raise ConfigError(f"freeze_by={self.freeze_by}; expected a fraction in (0, 1]")
        for name in ("warmup_fraction", "freeze_margin"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}; expected a fraction in [0, 1)")
        if self.warmup_fraction >= self.freeze_by:
            raise ConfigError(
                f"warmup_fraction={self.warmup_fraction} is not below freeze_by="
                f"{self.freeze_by}: the search would have no steps; lower the warm-up"
            )
        check_choice(self.freeze_rule, FREEZE_RULES, "freeze_rule")
        if self.latency_runtime is not None:
            check_choice(self.latency_runtime, list(LATENCY_RUNTIMES), "latency runtime")
        check_choice(self.arch_weighting, WEIGHTINGS, "arch_weighting")
        if self.freeze_window < 1 or self.freeze_rel_tol <= 0:
            raise ConfigError(
                f"freeze_window={self.freeze_window}, freeze_rel_tol={self.freeze_rel_tol}; "
                "expected a window of >= 1 step and a positive tolerance"
            )
        for name in ("tau_lr", "hyper_lr"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name}={value}; expected a learning rate >= 0")
        if self.tau_travel <= 0 or self.tau_clip < 0:
            raise ConfigError(
                f"tau_travel={self.tau_travel}, tau_clip={self.tau_clip}; expected tau_travel "
                "> 0 and tau_clip >= 0 (0 = no clamp)"
            )
        HyperBounds(lr=self.lr_bounds, wd=self.wd_bounds).check(self.lr, self.wd)
        if self.architecture is not None:
            self._check_architecture(self.architecture)

    def _check_architecture(self, arch: Architecture) -> None:
        """A given network: only for a mode that trains a fixed one, and of this run's space."""
        fixed = [m for m, phases in MODES.items() if not any(p.search for p in phases)]
        if self.mode not in fixed:
            raise ConfigError(
                f"an architecture to train was given, but mode={self.mode} searches one: use "
                f"mode {' or '.join(fixed)} (da_hpo learns DA and HPO on it), or drop the "
                "architecture"
            )
        given = arch.to_dict()
        shared = [f.name for f in fields(SpaceConfig) if f.name in given]
        wrong = [k for k in shared if given[k] != getattr(self.space, k)]
        if wrong:
            theirs = ", ".join(f"{k}={given[k]}" for k in wrong)
            ours = ", ".join(f"{k}={getattr(self.space, k)}" for k in wrong)
            raise ConfigError(
                f"the architecture to train has {theirs}, but this run has {ours}: pass the "
                "space, dataset and settings it was searched with"
            )

    def tau_lr_for(self, steps: int) -> float:
        """tau's Adam learning rate in a phase of ``steps`` steps (``tau_lr`` if set)."""
        return self.tau_lr if self.tau_lr is not None else self.tau_travel / max(1, steps)

    def use_amp(self) -> bool:
        return torch.device(self.device).type == "cuda" if self.amp is None else self.amp

    def use_channels_last(self) -> bool:
        cuda = torch.device(self.device).type == "cuda"
        return cuda if self.channels_last is None else self.channels_last
