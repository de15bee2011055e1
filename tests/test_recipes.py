"""DESIGN.md's recipes for a dataset and a mode, followed once: one registry entry each, and
the CLI, the defaults and the trainer take it up (the space recipe: test_toy_space.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dha_train.data import load_dataset
from dha_train.datasets import DATASETS, DatasetDefaults, DatasetEntry, defaults_help
from dha_train.engine.trainer import train
from dha_train.modes import MODES, Phase
from dha_train.spaces.base import SpaceConfig
from dha_train.train_config import TrainConfig
from pipeline.params import PARAMS
from pipeline.steps.search_train import resolve
from tests.test_trainer import RecordingSink


def test_a_registered_dataset_gets_choices_defaults_and_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = DatasetDefaults(resolution=8, epochs=3, width_mult=0.25, init_channels=4, layers=3)
    monkeypatch.setitem(
        DATASETS, "digits8", DatasetEntry("digits8", "dha_train.data:digits_bundle", small, False)
    )
    assert PARAMS["dataset"].parse("digits8") == "digits8"
    assert "digits8 8" in defaults_help("resolution")
    values = resolve({"dataset": "digits8", "resolution": 0, "epochs": 0, "width_mult": 0.0})
    assert (values["resolution"], values["epochs"], values["width_mult"]) == (8, 3, 0.25)
    bundle = load_dataset("digits8", None, 8, 0)
    assert bundle.train[0][0].shape == (3, 8, 8) and bundle.num_classes == 10


def test_a_registered_mode_is_offered_and_trained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(MODES, "da_only", (Phase(search=False, learn_da=True, learn_hp=False),))
    assert PARAMS["mode"].parse("da_only") == "da_only"
    data = load_dataset("digits", None, 8, 0)
    cfg = TrainConfig(
        space=SpaceConfig("mobilenet", 10, 8, width_mult=0.25), mode="da_only", epochs=1,
        batch_size=16, limit_steps_per_epoch=4, progress=False, checkpoint_every_steps=0,
    )  # fmt: skip
    sink = RecordingSink()
    result = train(cfg, data, workdir=tmp_path, sink=sink)
    assert len(result.history) == 1 and result.tau_probs is not None
    assert "tau_heatmap.png" in sink.figures
