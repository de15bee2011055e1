"""Datasets as the method sees them: train / val / test splits of RGB image tensors.

Images decoded from files (cifar, folders) are uint8 in [0, 255]: DataLoader workers hand a
quarter of the bytes of float images to the training process (77 MB -> 19 MB for a batch of
128 at 224 px). In-memory ``digits`` is float in [0, 1]. Consumers call :func:`to_unit_float`
once the batch is on the device, which gives float in [0, 1] for either.

None is downloaded at run time:
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), upscaled to RGB at the
  requested resolution, split 70/15/15 per class with a fixed permutation per seed.
- ``cifar10`` / ``cifar100``: a local copy in torchvision's format under ``data_dir``;
  the last 10% of the training set (fixed per seed) is the validation split, the official
  test set is the test split.
- ``imagefolder`` / ``imagenet``: ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*``
  (ImageFolder layout); ``val`` is halved into val/test splits per seed. Files without an
  image extension and hidden folders are skipped, images that fail to decode too; both are
  counted (``DataBundle.skipped*``), and only a class left without images is an error.
  ``imagenet`` is the paper's setting (224 px); its folder is not scanned for decodability up
  front (1.28M files), images that fail to decode are replaced by another sample and logged.

Augmentation is not done here: the trainer augments whole batches on the device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from dha_train.datasets import dataset_entry
from dha_train.errors import DatasetError
from dha_train.preprocess import Preprocess

__all__ = [
    "DataBundle",
    "digits_bundle",
    "cifar_bundle",
    "folder_bundle",
    "load_dataset",
    "to_unit_float",
    "unreadable_reason",
    "IMAGE_EXTENSIONS",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_float(x: Tensor) -> Tensor:
    """Images as float in [0, 1] on ``x``'s device: uint8 is divided by 255, float passes."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


@dataclass
class DataBundle:
    """The three splits of a dataset and what the model needs to know about it."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    skipped: int = 0  # unreadable images found while scanning (left out)
    skipped_non_image: int = 0  # files without an image extension in class folders (left out)
    preprocess: Preprocess | None = None  # the evaluation transform, stored with the model

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}  # type: ignore[arg-type]


def _split_indices(labels: np.ndarray, seed: int, fractions: Sequence[float]) -> list[np.ndarray]:
    """Stratified split of indices into len(fractions) parts, fixed for a seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.cumsum([0.0, *fractions]) * len(idx)
        for p in range(len(fractions)):
            parts[p].extend(idx[round(bounds[p]) : round(bounds[p + 1])].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _channel_stats(images: Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    images = to_unit_float(images)
    mean = images.mean(dim=(0, 2, 3)).tolist()
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])


def digits_bundle(kind: str, data_dir: Path | None, resolution: int, seed: int) -> DataBundle:
    """scikit-learn's digits, upscaled to ``resolution`` RGB images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(digits.target).long()
    train_idx, val_idx, test_idx = _split_indices(digits.target, seed, (0.70, 0.15, 0.15))
    mean, std = _channel_stats(x[train_idx])
    full = TensorDataset(x, y)
    return DataBundle(
        name="digits",
        train=Subset(full, train_idx.tolist()),
        val=Subset(full, val_idx.tolist()),
        test=Subset(full, test_idx.tolist()),
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        resolution=resolution,
        mean=mean,
        std=std,
        preprocess=Preprocess.centre_crop(resolution, mean=mean, std=std),
    )


def _require_dir(data_dir: Path | None, dataset: str, layout: str) -> Path:
    if data_dir is None or str(data_dir) == "":
        raise DatasetError(
            f"dataset={dataset} needs data_dir: pass -P data_dir=<folder> ({layout})"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data_dir {str(path)!r} does not exist or is not a folder ({layout})")
    return path


def cifar_bundle(kind: str, data_dir: Path | None, resolution: int, seed: int) -> DataBundle:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[kind]
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[kind]
    root = _require_dir(data_dir, kind, f"expected torchvision's layout: <data_dir>/{folder}/")
    # 32 px images; at another resolution resized (the crop of a square image is the image)
    tf = Preprocess.centre_crop(resolution).transform()
    try:
        train = cls(str(root), train=True, download=False, transform=tf)
        test = cls(str(root), train=False, download=False, transform=tf)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise DatasetError(
            f"no {kind} copy under {str(root)!r}: expected torchvision's layout "
            f"<data_dir>/{folder}/ (the python version of the dataset)"
        ) from exc
    labels = np.asarray(train.targets)
    train_idx, val_idx = _split_indices(labels, seed, (0.9, 0.1))
    sample = torch.stack([train[i][0] for i in train_idx[:: max(1, len(train_idx) // 2000)]])
    mean, std = _channel_stats(sample)
    return DataBundle(
        name=kind,
        train=Subset(train, train_idx.tolist()),
        val=Subset(train, val_idx.tolist()),
        test=test,
        num_classes=len(train.classes),
        class_names=list(train.classes),
        resolution=resolution,
        mean=mean,
        std=std,
        preprocess=Preprocess.centre_crop(resolution, mean=mean, std=std),
    )


class ImageFiles(Dataset):
    """(path, label) pairs decoded with PIL; a file that fails to decode is replaced by the
    next sample of the list (and logged), so one bad file never stops a long run."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable[[Image.Image], Tensor]):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                with Image.open(path) as img:
                    return self.transform(img.convert("RGB")), label
            except (OSError, UnidentifiedImageError, ValueError):
                log.warning("unreadable image skipped: %s", path)
        raise DatasetError("no readable image in the dataset")


def unreadable_reason(path: str | Path) -> str | None:
    """Why ``path`` cannot be decoded as an image (PIL's verify), or None if it can."""
    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _is_readable(path: str) -> bool:
    return unreadable_reason(path) is None


def _class_files(folder: Path) -> tuple[list[str], int]:
    """Image files under ``folder`` (hidden folders left out) and how many other files it holds.

    Like torchvision's ImageFolder, files without an image extension (``.DS_Store``,
    ``Thumbs.db``, ``README.txt``) are skipped; they are counted so that the run can say so.
    """
    images, others = [], 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                images.append(os.path.join(root, name))
            else:
                others += 1
                log.debug("not an image file, skipped: %s", os.path.join(root, name))
    return sorted(images), others


@dataclass(frozen=True)
class _Split:
    classes: list[str]
    samples: list[tuple[str, int]]
    unreadable: int  # image files that failed to decode
    non_image: int  # files without an image extension


def _scan_split(split_dir: Path, classes: list[str] | None, verify: bool) -> _Split:
    """Classes and samples of one ImageFolder split; an error only if a class ends up empty."""
    layout = "expected <data_dir>/train/<class>/<image> and <data_dir>/val/<class>/<image>"
    if not split_dir.is_dir():
        raise DatasetError(f"missing split folder {str(split_dir)!r} ({layout})")
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DatasetError(f"no class folders in {str(split_dir)!r} ({layout})")
    if classes is not None and found != classes:
        missing = sorted(set(classes) - set(found)) or sorted(set(found) - set(classes))
        raise DatasetError(
            f"class folders of {str(split_dir)!r} differ from train/ (first differences: "
            f"{missing[:5]}): both splits need the same class folders"
        )
    samples: list[tuple[str, int]] = []
    non_image = 0
    for label, name in enumerate(found):
        files, others = _class_files(split_dir / name)
        non_image += others
        samples.extend((f, label) for f in files)
    unreadable = 0
    if verify:
        with ThreadPoolExecutor(max_workers=8) as pool:
            ok = list(pool.map(_is_readable, [p for p, _ in samples]))
        unreadable = ok.count(False)
        for (path, _), good in zip(samples, ok, strict=True):
            if not good:
                log.warning("unreadable image skipped: %s", path)
        samples = [s for s, good in zip(samples, ok, strict=True) if good]
    counts = np.bincount([lbl for _, lbl in samples], minlength=len(found))
    empty = [found[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(
            f"class folder {str(split_dir / empty[0])!r} holds no readable image "
            f"({', '.join(IMAGE_EXTENSIONS)}): add images or remove the folder"
        )
    return _Split(found, samples, unreadable, non_image)


def folder_bundle(kind: str, data_dir: Path | None, resolution: int, seed: int) -> DataBundle:
    from torchvision import transforms

    root = _require_dir(
        data_dir, kind, "expected <data_dir>/train/<class>/... and <data_dir>/val/<class>/..."
    )
    verify = kind != "imagenet"
    train_split = _scan_split(root / "train", None, verify)
    val_split = _scan_split(root / "val", train_split.classes, verify)
    classes, train_samples, val_samples = (
        train_split.classes,
        train_split.samples,
        val_split.samples,
    )
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(resolution, scale=(0.08, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
        ]
    )
    preprocess = Preprocess.centre_crop(
        resolution, crop_fraction=224 / 256, mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    eval_tf = preprocess.transform()
    val_idx, test_idx = _split_indices(
        np.asarray([lbl for _, lbl in val_samples]), seed, (0.5, 0.5)
    )
    skipped = train_split.unreadable + val_split.unreadable
    non_image = train_split.non_image + val_split.non_image
    if skipped or non_image:
        log.warning(
            "skipped under %s: %d unreadable images, %d files that are not images",
            root,
            skipped,
            non_image,
        )
    return DataBundle(
        name=kind,
        train=ImageFiles(train_samples, train_tf),
        val=ImageFiles([val_samples[i] for i in val_idx], eval_tf),
        test=ImageFiles([val_samples[i] for i in test_idx], eval_tf),
        num_classes=len(classes),
        class_names=classes,
        resolution=resolution,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        skipped=skipped,
        skipped_non_image=non_image,
        preprocess=preprocess,
    )


def load_dataset(name: str, data_dir: str | Path | None, resolution: int, seed: int) -> DataBundle:
    """Load dataset ``name`` at ``resolution`` with the split fixed by ``seed``."""
    path = Path(data_dir) if data_dir else None
    bundle = dataset_entry(name).load_function()(name, path, resolution, seed)
    log.info(
        "dataset %s: %s, %d classes, %d px", name, bundle.sizes(), bundle.num_classes, resolution
    )
    return bundle
