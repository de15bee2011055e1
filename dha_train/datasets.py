"""The dataset registry: each dataset's loader and its defaults (light, torch-free).

A parameter left at 0 (resolution, epochs, width_mult, init_channels, layers) takes the
dataset's default from its entry; the CLI's help text is written from the same entries. The
loaders live in :mod:`dha_train.data` and are imported when a dataset is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dha_train.errors import check_choice
from dha_train.lazy import resolve

__all__ = ["DATASETS", "DatasetDefaults", "DatasetEntry", "dataset_entry", "defaults_help"]


@dataclass(frozen=True)
class DatasetDefaults:
    """What a 0 means for this dataset."""

    resolution: int
    epochs: int
    width_mult: float  # mobilenet space
    init_channels: int  # cell space: C
    layers: int  # cell space: number of cells


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset."""

    name: str
    loader: str  # "module:function", called as function(name, data_dir, resolution, seed)
    defaults: DatasetDefaults

    def load_function(self) -> Callable[..., Any]:
        return resolve(self.loader)


_SMALL = DatasetDefaults(resolution=32, epochs=50, width_mult=1.0, init_channels=16, layers=8)
# The paper's ImageNet setting: 224 px, ImageNet stem, C=48 and 14 cells for one-stage.
_LARGE = DatasetDefaults(resolution=224, epochs=50, width_mult=1.0, init_channels=48, layers=14)

DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        DatasetEntry(
            "digits",
            "dha_train.data:digits_bundle",
            DatasetDefaults(resolution=16, epochs=15, width_mult=0.35, init_channels=16, layers=5),
        ),
        DatasetEntry("cifar10", "dha_train.data:cifar_bundle", _SMALL),
        DatasetEntry("cifar100", "dha_train.data:cifar_bundle", _SMALL),
        DatasetEntry("imagefolder", "dha_train.data:folder_bundle", _LARGE),
        DatasetEntry("imagenet", "dha_train.data:folder_bundle", _LARGE),
    ]
}


def dataset_entry(name: str) -> DatasetEntry:
    """The entry of dataset ``name`` (ConfigError naming the known ones otherwise)."""
    check_choice(name, list(DATASETS), "dataset")
    return DATASETS[name]


def defaults_help(setting: str) -> str:
    """``"digits 16, cifar10/cifar100 32, ..."``: each dataset's default of ``setting``."""
    groups: dict[Any, list[str]] = {}
    for entry in DATASETS.values():
        groups.setdefault(asdict(entry.defaults)[setting], []).append(entry.name)
    return ", ".join(f"{'/'.join(names)} {value:g}" for value, names in groups.items())
