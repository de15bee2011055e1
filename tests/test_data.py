"""Datasets: fixed splits, clear errors for bad layouts, corrupt images skipped and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dha_train.data import load_dataset, to_unit_float
from dha_train.errors import ConfigError, DatasetError


def _indices(subset: torch.utils.data.Subset) -> set[int]:
    return set(subset.indices)


def test_digits_splits_are_fixed_per_seed_and_disjoint() -> None:
    a = load_dataset("digits", None, 16, seed=0)
    b = load_dataset("digits", None, 16, seed=0)
    c = load_dataset("digits", None, 16, seed=1)
    sizes = a.sizes()
    assert sum(sizes.values()) == 1797 and abs(sizes["train"] / 1797 - 0.70) < 0.01
    assert _indices(a.train) == _indices(b.train) and _indices(a.train) != _indices(c.train)
    assert not (_indices(a.train) & _indices(a.val)) and not (_indices(a.val) & _indices(a.test))
    x, y = a.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert a.num_classes == 10 and isinstance(y, torch.Tensor)


def _write_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4
) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder_skips_and_counts_corrupt_images(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    bundle = load_dataset("imagefolder", tmp_path, 16, seed=0)
    assert bundle.skipped == 1
    assert bundle.class_names == ["cat", "dog"] and len(bundle.train) == 8
    x, label = bundle.train[0]
    assert x.shape == (3, 16, 16) and label in (0, 1)
    assert len(bundle.val) + len(bundle.test) == 8
    # decoded images travel as uint8; to_unit_float gives what the model sees
    val = bundle.val[0][0]
    assert x.dtype == val.dtype == torch.uint8
    unit = to_unit_float(val)
    assert unit.dtype == torch.float32
    torch.testing.assert_close(unit * 255, val.float())


def test_imagefolder_skips_and_counts_files_that_are_not_images(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    strays = ["notes.txt", ".DS_Store", "Thumbs.db"]
    for name in strays:
        (tmp_path / "train" / "dog" / name).write_text("x")
    hidden = tmp_path / "val" / "cat" / ".ipynb_checkpoints"
    hidden.mkdir()
    Image.new("RGB", (8, 8)).save(hidden / "copy.png")  # below a hidden folder: not a sample
    bundle = load_dataset("imagefolder", tmp_path, 16, seed=0)
    assert bundle.skipped_non_image == len(strays) and bundle.skipped == 0
    assert len(bundle.train) == 8 and len(bundle.val) + len(bundle.test) == 8


def _class_of_strays(root: Path) -> None:
    """A class whose files are not images or sit in a hidden folder: empty once skipped."""
    for split in ("train", "val"):
        (root / split / "bird" / ".cache").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "bird" / ".cache" / "a.png")
        (root / split / "bird" / "notes.txt").write_text("x")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "train" / "empty").mkdir(), "holds no readable image"),
        (lambda root: _class_of_strays(root), "holds no readable image"),
        (
            lambda root: (
                [p.unlink() for p in (root / "val" / "dog").iterdir()]
                and (root / "val" / "dog").rmdir()
            ),
            "differ from train",
        ),
        (lambda root: __import__("shutil").rmtree(root / "val"), "missing split folder"),
    ],
)
def test_imagefolder_layout_errors(tmp_path: Path, damage, message: str) -> None:
    _write_folder(tmp_path)
    damage(tmp_path)
    with pytest.raises(DatasetError, match=message):
        load_dataset("imagefolder", tmp_path, 16, seed=0)


def test_missing_data_dir_and_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="needs data_dir"):
        load_dataset("imagenet", None, 224, seed=0)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "nope", 32, seed=0)
    with pytest.raises(DatasetError, match="torchvision's layout"):
        load_dataset("cifar10", tmp_path, 32, seed=0)
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("mnist", None, 32, seed=0)
