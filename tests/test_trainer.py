"""The training loop: modes on digits, exact resume, NaN handling, logging."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from dha_train.data import DataBundle, load_dataset
from dha_train.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from dha_train.engine.trainer import NonFiniteLossError, train
from dha_train.errors import ConfigError
from dha_train.modes import MODES, mode_phases
from dha_train.nas.budgets import Budget
from dha_train.nas.cost_model import CostModel
from dha_train.nas.search import ArchitectureSearch
from dha_train.spaces import build_supernet
from dha_train.spaces.base import SpaceConfig
from dha_train.train_config import TrainConfig

RES = 16


class RecordingSink:
    """Keeps what the trainer reports (the pipeline's sink writes it to MLflow)."""

    def __init__(self, crash_at_step: int | None = None) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.dicts: dict[str, dict[str, Any]] = {}
        self.figures: dict[str, Any] = {}
        self.crash_at_step = crash_at_step

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.crash_at_step is not None and step >= self.crash_at_step:
            raise KeyboardInterrupt("simulated interruption")
        self.metrics.append((step, dict(metrics)))

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self.dicts[name] = data

    def log_figure(self, figure: Any, name: str) -> None:
        self.figures[name] = figure


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_dataset("digits", None, RES, 0)


def _cfg(data: DataBundle, mode: str, **kw: Any) -> TrainConfig:
    space = kw.pop("space", "cell")
    base = dict(
        space=SpaceConfig(space, data.num_classes, RES, init_channels=8, layers=3, width_mult=0.35),
        mode=mode,
        epochs=3,
        batch_size=32,
        lr=0.05,
        lr_bounds=(1e-3, 0.1),
        progress=False,
        limit_steps_per_epoch=15,
        hflip=False,
        log_every_steps=5,
        checkpoint_every_steps=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_sequential_split_and_unknown_mode() -> None:
    phases = mode_phases("sequential", 5, 0.5)
    assert [e for _, e in phases] == [3, 2]
    assert phases[0][0].search and not phases[1][0].search and phases[1][0].fresh_from_search
    with pytest.raises(ConfigError, match="unknown mode"):
        mode_phases("dhaa", 5, 0.5)


def test_bad_config_is_a_user_error(digits: DataBundle) -> None:
    with pytest.raises(ConfigError, match="hpo_batch"):
        _cfg(digits, "dha", hpo_batch="later").validate()
    wrong = _cfg(digits, "baseline", space="cell")
    wrong = dataclasses.replace(wrong, space=dataclasses.replace(wrong.space, num_classes=3))
    with pytest.raises(ConfigError, match="num_classes"):
        train(wrong, digits, workdir=Path("unused"), sink=RecordingSink())


def _fingerprint(result: Any) -> tuple[Any, ...]:
    weights = torch.cat(
        [p.detach().flatten() for p in result.model.state_dict().values() if p.is_floating_point()]
    )
    return (
        result.architecture.to_dict(),
        result.test,
        result.history,
        result.tau_probs,
        result.lr_trajectory,
        weights,
    )


@pytest.mark.e2e  # minutes on a busy 2-core CPU: three runs, each building the ISTA search
@pytest.mark.parametrize("hpo_batch", ["next", "separate"])
def test_resume_gives_the_uninterrupted_result(
    digits: DataBundle, tmp_path: Path, hpo_batch: str
) -> None:
    cfg = _cfg(
        digits,
        "dha",
        epochs=2,
        limit_steps_per_epoch=6,
        checkpoint_every_steps=4,
        log_every_steps=1,
        hpo_batch=hpo_batch,
    )
    full = train(cfg, digits, workdir=tmp_path / "full", sink=RecordingSink(), resume=False)
    with pytest.raises(KeyboardInterrupt):  # dies at step 9, mid-epoch 2, after the step-8 save
        train(cfg, digits, workdir=tmp_path / "cut", sink=RecordingSink(crash_at_step=9))
    ckpt = load_checkpoint(tmp_path / "cut")
    assert ckpt is not None and ckpt["global_step"] == 8 and ckpt["step_in_epoch"] == 2
    resumed = train(cfg, digits, workdir=tmp_path / "cut", sink=RecordingSink(), resume=True)
    a, b = _fingerprint(full), _fingerprint(resumed)
    assert a[:5] == b[:5]
    torch.testing.assert_close(a[5], b[5], rtol=0, atol=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits: DataBundle, tmp_path: Path) -> None:
    cfg = _cfg(
        digits,
        "baseline",
        lr=1e8,
        lr_bounds=(0.0, 1e9),
        grad_clip=0.0,
        epochs=1,
        limit_steps_per_epoch=30,
        checkpoint_every_steps=1,
        log_every_steps=1,
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(cfg, digits, workdir=tmp_path, sink=RecordingSink())
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert 1 <= ckpt["global_step"] < 30
    assert not list(tmp_path.glob("*.tmp"))


KL_FLOOR = 0.01  # nats; the uniform policy has 0


@pytest.mark.e2e
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_learns_digits(digits: DataBundle, tmp_path: Path, mode: str) -> None:
    sink = RecordingSink()
    # Sequential modes train the derived network from scratch in their second half, so they
    # get twice the epochs: each phase then has as many steps as a one-phase mode.
    # Search modes also spend 20% of their steps warming up on random paths, and dha learns
    # b, tau and eta at once from a cold start (at 5 epochs it reached 47-48% on 2 threads)
    epochs = 8 if len(MODES[mode]) == 2 or mode == "dha" else 5
    # half of a search phase trains the frozen child (freeze_by), so the derived network has
    # as many fixed-architecture steps as a short baseline run
    cfg = _cfg(digits, mode, epochs=epochs, limit_steps_per_epoch=30, freeze_by=0.5)
    result = train(cfg, digits, workdir=tmp_path, sink=sink)
    assert result.test["top1"] > 50.0, result.test  # percent; chance is 10%
    assert result.test["top5"] >= result.test["top1"]
    assert len(result.history) == epochs
    out = result.model(torch.rand(2, 3, RES, RES))
    assert out.shape == (2, 10)
    assert "architecture.json" in sink.dicts and "lr_wd_trajectories.png" in sink.figures
    phases = MODES[mode]
    if any(p.learn_da for p in phases):
        assert "tau_heatmap.png" in sink.figures
        assert any(name.startswith("tau_top5/") for name in sink.dicts)
        assert result.tau_probs is not None
        # the policy learned: p(tau) moved away from uniform, without collapsing
        final = result.history[-1]
        assert final["tau_kl_uniform"] > KL_FLOOR, final
        assert final["tau_max_x_uniform"] / 196 < 0.10
    if any(p.search for p in phases):
        assert "architecture_evolution.png" in sink.figures
        assert all("frozen_units" in h for h in result.history if h["phase"] == 0)
        # no unit froze while the network was at chance, and every unit froze in the search
        net = build_supernet(cfg.space)
        events = [e for h in result.history for e in h.get("freeze_events", [])]
        assert sorted(u for e in events for u in e["units"]) == list(range(net.num_units()))
        assert all(e["val_top1"] >= 10.0 + 15.0 for e in events), events
        # the data moved the architecture away from where the seed put it at step 0
        step0 = ArchitectureSearch(net, Budget(), CostModel(net), seed=cfg.seed)
        assert result.architecture != step0.current_architecture(), result.architecture
    if any(p.learn_hp for p in phases):
        # eta is searched in the last phase; a sequential mode's first phase uses a cosine lr
        first_phase_steps = (epochs // 2) * 30 if len(phases) == 2 else 0
        lrs = [v for step, v in result.lr_trajectory if step > first_phase_steps]
        assert all(1e-3 <= v <= 0.1 for v in lrs) and len(set(lrs)) > 1
