"""Images/s: batched on-device DA (dha_train.augment) vs torchvision RandAugment on PIL.

Both pipelines read the same images through a DataLoader with the same number of workers.
Ours: workers hand over plain float batches; pairs are drawn from p(tau) and both ops run on
the whole batch on the device. Theirs: RandAugment(num_ops=2) per PIL image in the workers,
then PIL -> float tensor. Goal: ours >= 5x at 32 px and 224 px.

    python benchmarks/bench_augment.py [--device cuda] [--workers 2] [--batch 128]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import RandAugment
from torchvision.transforms import functional as tvf

from dha_train.augment import apply_pairs, sample_magnitudes
from dha_train.data import load_dataset
from dha_train.policy import AugmentPolicy


class PilImages(Dataset):
    """The same images as PIL, augmented per sample by RandAugment in the workers."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = [tvf.to_pil_image(img) for img in (images * 255).round().to(torch.uint8)]
        self.augment = RandAugment(num_ops=2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return tvf.pil_to_tensor(self.augment(self.images[i])).float().div_(255)


class Tensors(Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _rate(loader: DataLoader, per_batch, device: torch.device, min_images: int) -> float:
    done, start = 0, None
    while done < min_images:
        for x in loader:
            x = per_batch(x.to(device, non_blocking=True))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if start is None:  # first batch = warm-up (workers starting)
                start = time.perf_counter()
                continue
            done += x.shape[0]
            if done >= min_images:
                break
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--images", type=int, default=1024, help="images timed per setting")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    args = ap.parse_args()
    device = torch.device(args.device)
    policy = AugmentPolicy().to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def ours(x: torch.Tensor) -> torch.Tensor:
        pairs = policy.sample(x.shape[0], gen)
        mags, signs = sample_magnitudes(x.shape[0], gen)
        return apply_pairs(x, pairs, mags, signs)

    print(
        f"device={device} workers={args.workers} batch={args.batch} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"{'size':>5} {'ours img/s':>12} {'torchvision PIL img/s':>22} {'ratio':>7}")
    for size in args.sizes:
        images = torch.stack([x for x, _ in load_dataset("digits", None, size, 0).train])
        images = images[: max(args.batch * 4, 256)]
        kw = dict(
            batch_size=args.batch,
            num_workers=args.workers,
            shuffle=True,
            persistent_workers=args.workers > 0,
            pin_memory=device.type == "cuda",
        )
        n = args.images if size <= 64 else max(args.batch * 2, args.images // 4)
        rate_ours = _rate(DataLoader(Tensors(images), **kw), ours, device, n)
        rate_tv = _rate(DataLoader(PilImages(images), **kw), lambda x: x, device, n)
        print(f"{size:>5} {rate_ours:>12.0f} {rate_tv:>22.0f} {rate_ours / rate_tv:>6.1f}x")


if __name__ == "__main__":
    main()
