"""The train / val / test splits as MLflow datasets (``mlflow.log_input``), for the Dataset column.

Each split is logged as a small table of (sample, label): the sample's file path for image
folders, its index in the source otherwise. MLflow keeps the table's digest, schema and
profile (rows, label counts), so two runs on the same split show the same dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from torch.utils.data import Dataset, Subset, TensorDataset

from dha_train.data import DataBundle

__all__ = ["log_splits", "split_table"]

_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def _samples(dataset: Dataset) -> tuple[list[Any], list[int]]:
    """(sample ids, labels) of a split, without decoding any image."""
    if isinstance(dataset, Subset):
        ids, labels = _samples(dataset.dataset)
        return [ids[i] for i in dataset.indices], [labels[i] for i in dataset.indices]
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1].tolist()
        return list(range(len(labels))), labels
    if hasattr(dataset, "samples"):  # ImageFiles: (path, label) pairs
        return [p for p, _ in dataset.samples], [int(lbl) for _, lbl in dataset.samples]
    if hasattr(dataset, "targets"):  # torchvision's CIFAR
        labels = [int(t) for t in dataset.targets]
        return list(range(len(labels))), labels
    raise TypeError(f"cannot list the samples of a {type(dataset).__name__}")


def split_table(dataset: Dataset, class_names: list[str]) -> pd.DataFrame:
    """One row per sample: its id (path or index) and its class name."""
    ids, labels = _samples(dataset)
    return pd.DataFrame(
        {"sample": [str(i) for i in ids], "label": [class_names[i] for i in labels]}
    )


def _source(data: DataBundle, data_dir: str) -> CodeDatasetSource:
    """Where the samples come from: the folder, or the loader of a bundled dataset.

    (A path string would make MLflow 3.17 guess between two registered local sources, and
    warn.)
    """
    if data_dir:
        return CodeDatasetSource({"data_dir": str(Path(data_dir).expanduser().resolve())})
    return CodeDatasetSource({"loader": f"dha_train.data.load_dataset({data.name!r})"})


def log_splits(data: DataBundle, *, data_dir: str) -> None:
    """Log the three splits of ``data`` to the active run, contexts training/validation/test."""
    source = _source(data, data_dir)
    for split, context in _CONTEXTS.items():
        table = split_table(getattr(data, split), data.class_names)
        dataset = mlflow.data.from_pandas(
            table, source=source, name=f"{data.name}-{split}", targets="label"
        )
        mlflow.log_input(dataset, context=context)
