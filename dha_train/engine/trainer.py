"""The outer loops: Algorithm 1's epochs (``dha``), Algorithm 2 (``sequential``), the Table 3
ablations and a baseline. One step of Algorithm 1 is :mod:`dha_train.engine.train_step`'s.

``train`` runs the phases of a mode (see :mod:`dha_train.modes`), checkpointing every
``checkpoint_every_steps`` steps and at each epoch end, and resumes from the last checkpoint.
Search phases are one-stage (ISTA-NAS): after every decision unit has frozen, training goes on
with the fixed architecture; the result is the derived child with its trained weights.

Multi-process (issue 7, :mod:`dha_train.engine.distributed`): ``rank`` / ``world_size`` shard the
batches and the evaluation, gradients are all-reduced in every step, each rank has its own DA
generator seeded from ``(seed, rank)``, and only rank 0 logs and writes checkpoints. Every rank
calls ``train`` with its own ``rank`` after joining the process group. A checkpoint holds rank
0's RNG streams; resumed on any number of ranks, rank 0 continues them and the others are
re-seeded from ``(seed, rank, step)``; a mid-epoch position is rescaled to the new number of
samples per step (the epoch resumes after as many samples; the shards differ).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dha_train.data import DataBundle
from dha_train.engine.checkpoint import (
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from dha_train.engine.distributed import all_reduce_, broadcast_object, sync_buffers_
from dha_train.engine.epoch_report import log_epoch
from dha_train.engine.evaluation import evaluate
from dha_train.engine.freezing import freeze_at_epoch_end
from dha_train.engine.phase import PhaseRun, build_phase
from dha_train.engine.result import TrainResult, finish_run
from dha_train.engine.sampling import EpochBatches
from dha_train.engine.seeding import derive_seed, reseed_resumed_rank, seed_everything
from dha_train.engine.sink import MetricsSink
from dha_train.errors import ConfigError, UserError
from dha_train.modes import Phase, mode_phases
from dha_train.spaces.arch import architecture_from_dict
from dha_train.train_config import TrainConfig

__all__ = ["TrainResult", "MetricsSink", "NonFiniteLossError", "train"]

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """The training loss became NaN or inf."""


def _check_data(cfg: TrainConfig, data: DataBundle) -> None:
    if cfg.space.num_classes != data.num_classes or cfg.space.resolution != data.resolution:
        raise ConfigError(
            f"space config has num_classes={cfg.space.num_classes}, resolution="
            f"{cfg.space.resolution} but the data has {data.num_classes} classes at "
            f"{data.resolution} px; build the SpaceConfig from the DataBundle"
        )


class _Run:
    """Mutable state of one ``train`` call (the part a checkpoint holds besides the phase)."""

    def __init__(
        self, cfg: TrainConfig, data: DataBundle, workdir: Path, sink: MetricsSink
    ) -> None:
        self.cfg, self.data, self.workdir, self.sink = cfg, data, workdir, sink
        self.device = torch.device(cfg.device)
        self.main = cfg.rank == 0
        self.phases = mode_phases(cfg.mode, cfg.epochs, cfg.sequential_search_fraction)
        self.phase_idx = self.epoch = self.step_in_epoch = self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.lr_traj: list[tuple[int, float]] = []
        self.wd_traj: list[tuple[int, float]] = []
        self.searched: dict[str, Any] | None = None  # architecture found by a search phase
        self.accum = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, correct, n
        self.bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self.run: PhaseRun | None = None

    # --- checkpoints ------------------------------------------------------------------
    def state(self, accum: torch.Tensor | None = None) -> dict[str, Any]:
        """Checkpoint contents; ``accum``: the epoch's running sums over all ranks."""
        assert self.run is not None
        return {
            "format": 1,
            "mode": self.cfg.mode,
            "world_size": self.cfg.world_size,
            "samples_per_step": self.cfg.batch_size * self.cfg.world_size,
            "phase_idx": self.phase_idx,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "history": self.history,
            "lr_traj": self.lr_traj,
            "wd_traj": self.wd_traj,
            "searched": self.searched,
            "accum": (self.accum if accum is None else accum).cpu(),
            "phase": self.run.state_dict(),
            "rng": rng_state(self.run.generators()),
        }

    def save(self) -> None:
        self.check_finite()
        assert self.run is not None
        sync_buffers_(self.run.net)  # BN running statistics: the mean over ranks
        totals = self.accum_over_ranks()
        if self.main:
            save_checkpoint(self.state(totals), self.workdir)

    def accum_over_ranks(self) -> torch.Tensor:
        """The epoch's running (loss sum, correct, samples), summed over every rank."""
        totals = self.accum.clone()
        all_reduce_([totals], "sum")
        return totals

    def restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt["mode"] != self.cfg.mode:
            raise ConfigError(
                f"checkpoint in {self.workdir} is for mode {ckpt['mode']!r}, not "
                f"{self.cfg.mode!r}; use another workdir or resume=False"
            )
        for key in ("phase_idx", "epoch", "step_in_epoch", "global_step", "searched"):
            setattr(self, key, ckpt[key])
        self.history, self.lr_traj, self.wd_traj = ckpt["history"], ckpt["lr_traj"], ckpt["wd_traj"]
        self.lr_traj = [tuple(t) for t in self.lr_traj]  # type: ignore[misc]
        self.wd_traj = [tuple(t) for t in self.wd_traj]  # type: ignore[misc]
        self.accum = ckpt["accum"].to(self.device)
        # another number of ranks (or batch size): resume after as many samples of the epoch
        per_step = self.cfg.batch_size * self.cfg.world_size
        saved = int(ckpt.get("samples_per_step", per_step))
        self.step_in_epoch = self.step_in_epoch * saved // per_step
        if not self.main:  # the saved sums are over all ranks: rank 0 carries them on
            self.accum.zero_()
        self.start_phase()
        assert self.run is not None
        self.run.load_state_dict(ckpt["phase"])
        if self.main:
            restore_rng_state(ckpt["rng"], self.run.generators())
        else:
            reseed_resumed_rank(
                self.cfg.seed, rank=self.cfg.rank, step=self.global_step,
                generators=self.run.generators(),
            )  # fmt: skip

    def check_finite(self) -> None:
        bad = self.bad.float().reshape(1)
        all_reduce_([bad], "max")  # every rank stops together
        if bool(bad):
            raise NonFiniteLossError(
                f"the training loss became NaN/inf by step {self.global_step} (phase "
                f"{self.phase_idx}, epoch {self.epoch}); the last good checkpoint in "
                f"{self.workdir} is kept: lower lr / lr_bounds or hyper_lr and resume"
            )

    # --- phases -----------------------------------------------------------------------
    def start_phase(self) -> None:
        phase, _ = self.phases[self.phase_idx]
        arch = None
        if phase.fresh_from_search and self.searched is not None:
            arch = architecture_from_dict(self.searched)
        _, epochs = self.phases[self.phase_idx]
        self.run = build_phase(
            self.cfg,
            self.data,
            phase,
            arch=arch,
            phase_idx=self.phase_idx,
            phase_steps=epochs * self.steps_per_epoch(),
        )

    def steps_per_epoch(self) -> int:
        n = len(EpochBatches(len(self.data.train), self.cfg.batch_size, 0, 0, self.cfg))
        return (
            n if self.cfg.limit_steps_per_epoch is None else min(n, self.cfg.limit_steps_per_epoch)
        )

    def set_schedule(self, phase: Phase, epochs: int) -> None:
        """Cosine lr over the phase for modes that do not learn lr."""
        assert self.run is not None
        if phase.learn_hp:
            return
        total = max(1, epochs * self.steps_per_epoch())
        t = self.epoch * self.steps_per_epoch() + self.step_in_epoch
        self.run.parts.weights_opt.set_lr(0.5 * self.cfg.lr * (1 + math.cos(math.pi * t / total)))

    def run_epoch(self, phase: Phase, epochs: int, bar: tqdm) -> None:
        assert self.run is not None
        cfg = self.cfg
        batches = EpochBatches(
            len(self.data.train),
            cfg.batch_size,
            cfg.seed,
            self.phase_idx * 100_000 + self.epoch,
            cfg,
            start=self.step_in_epoch,
            limit=cfg.limit_steps_per_epoch,
        )
        loader = DataLoader(
            self.data.train,
            batch_sampler=batches,
            num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # creating an iterator must not draw from the global RNG
        )
        for x, y in loader:
            self.set_schedule(phase, epochs)
            x = x.to(self.device, non_blocking=True)  # uint8 or float; the step makes it float
            y = y.to(self.device, non_blocking=True)
            out = self.run.step(x, y)
            self.accum += torch.stack(
                [
                    out.loss.double() * out.count,
                    out.correct.double(),
                    torch.tensor(float(out.count), device=self.device),
                ]
            )
            self.bad |= ~torch.isfinite(out.loss)
            self.global_step += 1
            self.step_in_epoch += 1
            bar.update(1)
            if self.global_step % cfg.log_every_steps == 0:
                self.log_step(out.loss, out.correct, out.count, bar)
            if cfg.checkpoint_every_steps and self.global_step % cfg.checkpoint_every_steps == 0:
                self.save()

    def log_step(self, loss: torch.Tensor, correct: torch.Tensor, n: int, bar: tqdm) -> None:
        self.check_finite()
        assert self.run is not None
        lr, wd = self.run.eta()
        self.lr_traj.append((self.global_step, lr))
        self.wd_traj.append((self.global_step, wd))
        metrics = {"step/loss": float(loss), "step/top1": 100.0 * float(correct) / n}
        metrics.update(lr=lr, wd=wd)
        bar.set_postfix(
            loss=f"{metrics['step/loss']:.3f}",
            top1=f"{metrics['step/top1']:.1f}%",
            lr=f"{lr:.4f}",
            wd=f"{wd:.2e}",
            refresh=False,  # shown at the bar's next update, within its mininterval
        )
        if self.main:
            self.sink.log_metrics(metrics, self.global_step)

    def end_epoch(self, phase: Phase, epochs: int) -> None:
        self.check_finite()
        assert self.run is not None
        loss_sum, correct, n = self.accum_over_ranks().tolist()
        sync_buffers_(self.run.net)
        val = evaluate(
            self.run.eval_forward(),
            self.data.val,
            batch_size=self.cfg.batch_size,
            workers=self.cfg.workers,
            device=self.device,
            rank=self.cfg.rank,
            world_size=self.cfg.world_size,
        )
        lr, wd = self.run.eta()
        record: dict[str, Any] = {
            "phase": self.phase_idx,
            "epoch": len(self.history) + 1,
            "step": self.global_step,
            "train_loss": loss_sum / max(n, 1),
            "train_top1": 100.0 * correct / max(n, 1),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "lr": lr,
            "wd": wd,
        }
        if self.run.policy is not None:
            record.update(self.run.policy.stats())
            record["tau_top5"] = self.run.policy.top_pairs(5)
        if self.run.search is not None:
            self.freeze_units(record, epochs)
            record["frozen_units"] = self.run.frozen_units()
            record["op_shares"] = self.run.op_shares()
        self.history.append(record)
        if self.main:
            search = self.run.search
            arch = None if search is None else search.current_architecture()
            log_epoch(self.sink, record, arch)
        self.accum.zero_()
        self.epoch += 1
        self.step_in_epoch = 0
        self.save()

    def freeze_units(self, record: dict[str, Any], epochs: int) -> None:
        """The freezing gate (:mod:`dha_train.engine.freezing`); events go in the record."""
        assert self.run is not None and self.run.search is not None
        record["freeze_events"] = freeze_at_epoch_end(
            self.run.search, self.cfg, record, epoch=self.epoch, epochs=epochs,
            step=self.global_step, num_classes=self.data.num_classes,
        )  # fmt: skip

    def finish_phase(self) -> None:
        assert self.run is not None
        if self.run.search is not None:
            self.searched = self.run.search.current_architecture().to_dict()
        self.phase_idx += 1
        self.epoch = self.step_in_epoch = 0
        if self.phase_idx < len(self.phases):
            self.start_phase()
            self.save()


def train(
    cfg: TrainConfig,
    data: DataBundle,
    *,
    workdir: Path,
    sink: MetricsSink,
    resume: bool = False,
    evaluate_test: bool = True,
) -> TrainResult:
    """Run ``cfg.mode`` on ``data`` (a DataBundle); see the module docstring.

    ``evaluate_test=False``: the caller evaluates the child on the test split itself (the
    search_train step does, through the deployable network) and ``TrainResult.test`` is {}.
    """
    _check_data(cfg, data)
    workdir = Path(workdir)
    seed_everything(derive_seed(cfg.seed, "process", rank=cfg.rank))
    state = _Run(cfg, data, workdir, sink)
    ckpt = None
    if resume:  # rank 0 reads it (other nodes need no access to its disk)
        ckpt = broadcast_object(load_checkpoint(workdir) if state.main else None)
    if ckpt is not None:
        state.restore(ckpt)
        log.info("resumed from %s at step %d", workdir, state.global_step)
    else:
        state.start_phase()
    while state.phase_idx < len(state.phases):
        phase, epochs = state.phases[state.phase_idx]
        total = epochs * state.steps_per_epoch()
        done = state.epoch * state.steps_per_epoch() + state.step_in_epoch
        with tqdm(
            total=total,
            initial=done,
            disable=not (cfg.progress and state.main),
            desc=f"{cfg.mode}[{state.phase_idx}]",
            leave=False,
            mininterval=0.1 if sys.stderr.isatty() else 30.0,  # a log file: a line per 30 s
        ) as bar:
            while state.epoch < epochs:
                state.run_epoch(phase, epochs, bar)
                state.end_epoch(phase, epochs)
        if state.phase_idx == len(state.phases) - 1:
            break
        state.finish_phase()
    run = state.run
    assert run is not None
    return finish_run(
        run, state.data, state.cfg, state.sink,
        history=state.history, lr_traj=state.lr_traj, wd_traj=state.wd_traj,
        step=state.global_step, evaluate_test=evaluate_test,
    )  # fmt: skip
