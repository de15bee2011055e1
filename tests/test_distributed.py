"""Multi-process DHA on CPU (gloo, 2 processes): the same step as one process, and resume
on a different number of ranks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dha_train.da.augment import sample_magnitudes
from dha_train.da.policy import AugmentPolicy
from dha_train.data import DataBundle, load_dataset
from dha_train.engine.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint
from dha_train.engine.phase import build_phase
from dha_train.engine.train_step import train_step
from dha_train.engine.trainer import train
from dha_train.modes import mode_phases
from dha_train.spaces.base import SpaceConfig
from dha_train.train_config import TrainConfig

RES = 16
BATCH = 16  # the global batch of the equivalence test
STEPS = 2  # eta moves from the second step on (Eq. 4 uses the previous step's update)


def _digits() -> DataBundle:
    return load_dataset("digits", None, RES, 0)


def _cfg(data: DataBundle, rank: int, world: int, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        space=SpaceConfig(
            kw.pop("space", "cell"),
            data.num_classes,
            RES,
            init_channels=8,
            layers=3,
            width_mult=0.35,
        ),
        mode="dha",
        epochs=3,
        batch_size=BATCH // world,
        lr=0.05,
        hyper_lr=1e-3,
        progress=False,
        hflip=False,
        checkpoint_every_steps=0,
        warmup_fraction=0.0,  # b is searched from the first step: its all-reduce is compared
        rank=rank,
        world_size=world,
    )
    base.update(kw)
    return TrainConfig(**base)


def _join(rank: int, world: int, tmp: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp / 'rendezvous'}", rank=rank, world_size=world
    )


def _steps(rank: int, world: int, out: Path) -> None:
    """``STEPS`` DHA steps on this rank's share of fixed global batches; saves the result."""
    data = _digits()
    cfg = _cfg(data, rank, world)
    phase = mode_phases("dha", cfg.epochs, cfg.sequential_search_fraction)[0][0]
    run = build_phase(cfg, data, phase, arch=None, phase_idx=0, phase_steps=cfg.epochs * STEPS)
    # The same per-sample DA draws for both runs: the global batch's draws, this rank's slice.
    g = torch.Generator().manual_seed(123)
    draws = [(AugmentPolicy().sample(BATCH, g), *sample_magnitudes(BATCH, g)) for _ in range(STEPS)]
    share = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
    step = iter(range(STEPS))
    run.parts.draw_da = lambda n: tuple(t[share] for t in draws[next(step)])  # type: ignore[assignment,return-value]
    # BatchNorm with batch statistics makes 2 x B/2 differ from 1 x B (PyTorch's SyncBatchNorm
    # is GPU-only): the comparison normalises with the running statistics instead.
    run.net.train()
    for m in run.net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for s in range(STEPS):
        idx = list(range(s * BATCH, (s + 1) * BATCH))[share]
        x = torch.stack([data.train[i][0] for i in idx])
        y = torch.tensor([int(data.train[i][1]) for i in idx])
        train_step(run.parts, x, y)
    assert run.policy is not None and run.search is not None
    torch.save(
        {
            "net": run.net.state_dict(),
            "tau": run.policy.tau.detach(),
            "b": run.search.b.detach(),
            "eta": torch.stack(list(map(torch.as_tensor, run.eta()))),
            "support": [list(s) for s in run.search.current_support()],
        },
        out / f"world{world}_rank{rank}.pt",
    )


def _spawned_steps(rank: int, world: int, tmp: Path) -> None:
    _join(rank, world, tmp)
    try:
        _steps(rank, world, tmp)
    finally:
        dist.destroy_process_group()


def test_two_ranks_at_half_batch_equal_one_process(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        _steps(0, 1, tmp_path)
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_spawned_steps, args=(2, tmp_path), nprocs=2, join=True)
    one = torch.load(tmp_path / "world1_rank0.pt")
    ranks = [torch.load(tmp_path / f"world2_rank{r}.pt") for r in range(2)]
    initial = _cfg(_digits(), 0, 1)
    assert float(one["eta"][0]) != initial.lr, "eta did not move: the test would be vacuous"
    assert one["tau"].abs().max() > 0, "tau did not move"
    for got in ranks:
        assert got["support"] == one["support"]
        torch.testing.assert_close(got["eta"], one["eta"], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(got["tau"], one["tau"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["b"], one["b"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["net"], one["net"], rtol=1e-4, atol=1e-5)
    # and the ranks agree exactly with each other
    for key in ("eta", "tau", "b"):
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["net"], ranks[1]["net"], rtol=0, atol=0)


class _StopSink:
    """Rank 0's sink stops the run at ``stop_at``; any other rank must not log at all."""

    def __init__(self, rank: int, stop_at: int) -> None:
        self.rank, self.stop_at = rank, stop_at

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._check()
        if step >= self.stop_at:
            raise RuntimeError("simulated stop")

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self._check()

    def log_figure(self, figure: Any, name: str) -> None:
        self._check()

    def _check(self) -> None:
        if self.rank != 0:
            raise RuntimeError(f"rank {self.rank} logged")


class _Sink(_StopSink):
    def __init__(self) -> None:
        super().__init__(0, 10**9)


# checkpoints at steps 7, 14, 20 (epoch end), 21, 28; stopped at step 30
RESUME_KW: dict[str, Any] = dict(
    batch_size=16,
    limit_steps_per_epoch=20,
    checkpoint_every_steps=7,
    log_every_steps=10,
    epochs=4,
    hyper_lr=1e-4,
)


def _spawned_stop(rank: int, world: int, tmp: Path) -> None:
    _join(rank, world, tmp)
    try:
        cfg = _cfg(_digits(), rank, world, **RESUME_KW)
        train(cfg, _digits(), workdir=tmp / "work", sink=_StopSink(rank, stop_at=30))
    finally:
        dist.destroy_process_group()


def test_stop_on_two_ranks_resume_on_one(tmp_path: Path) -> None:
    # Rank 0 stops; rank 1 then loses its peer in the next all-reduce. spawn reports whichever
    # error it sees first, so either message is the expected stop.
    with pytest.raises(mp.ProcessRaisedException, match="simulated stop|Connection closed by peer"):
        mp.spawn(_spawned_stop, args=(2, tmp_path), nprocs=2, join=True)
    work = tmp_path / "work"
    # rank 0 only, no temp files: the latest checkpoint and the one before it
    assert sorted(p.name for p in work.iterdir()) == sorted([CHECKPOINT_NAME, PREVIOUS_NAME])
    ckpt = load_checkpoint(work)
    assert ckpt is not None and ckpt["world_size"] == 2
    assert ckpt["global_step"] == 28 and ckpt["epoch"] == 1 and ckpt["step_in_epoch"] == 8
    data = _digits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(_cfg(data, 0, 1, **RESUME_KW), data, workdir=work, sink=_Sink(), resume=True)
    finally:
        torch.set_num_threads(threads)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    # 8 steps of 2 x 16 samples done = 16 steps of 16 on one rank: 4 more, then 2 x 20
    assert result.history[-1]["step"] == 28 + 4 + 40
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert result.test["top1"] > 20.0, result.test  # percent; chance is 10%
