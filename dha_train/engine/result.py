"""What a ``train`` call produced: the derived child (or fixed network) with its trained
weights, its test metrics, and the run report it logs (:mod:`dha_train.engine.epoch_report`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from dha_train.data import DataBundle
from dha_train.engine.epoch_report import log_run_report
from dha_train.engine.evaluation import evaluate
from dha_train.engine.phase import PhaseRun
from dha_train.engine.sink import MetricsSink
from dha_train.spaces.arch import Architecture
from dha_train.train_config import TrainConfig

__all__ = ["TrainResult", "finish_run"]


@dataclass
class TrainResult:
    """What a run produced."""

    architecture: Architecture
    model: nn.Module  # the derived child (or fixed network) with trained weights, on CPU
    test: dict[str, float]  # loss/top1/top5 on the test split; {} when not evaluated
    history: list[dict[str, Any]]
    lr_trajectory: list[tuple[int, float]]
    wd_trajectory: list[tuple[int, float]]
    tau_probs: list[list[float]] | None
    extra: dict[str, Any] = field(default_factory=dict)


def finish_run(
    run: PhaseRun,
    data: DataBundle,
    cfg: TrainConfig,
    sink: MetricsSink,
    *,
    history: list[dict[str, Any]],
    lr_traj: list[tuple[int, float]],
    wd_traj: list[tuple[int, float]],
    step: int,
    evaluate_test: bool,
) -> TrainResult:
    """The last phase's final model, evaluated on the test split (unless ``evaluate_test`` is
    False), with the run report logged on rank 0."""
    arch, model = run.final_model()
    test = {}
    if evaluate_test:
        test = evaluate(
            run.model_forward(model),
            data.test,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            device=torch.device(cfg.device),
            rank=cfg.rank,
            world_size=cfg.world_size,
        )
    probs = run.policy.probs().detach().cpu() if run.policy is not None else None
    if cfg.rank == 0:
        if test:
            sink.log_metrics({f"test_{k}": v for k, v in test.items()}, step)
        log_run_report(
            sink,
            arch=arch,
            history=history,
            config=asdict(cfg),
            probs=None if probs is None else probs.numpy(),
            lr_traj=lr_traj,
            wd_traj=wd_traj,
        )
    return TrainResult(
        architecture=arch,
        model=model.cpu().eval(),
        test=test,
        history=history,
        lr_trajectory=lr_traj,
        wd_trajectory=wd_traj,
        tau_probs=probs.tolist() if probs is not None else None,
    )
